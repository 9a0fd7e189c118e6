"""The one encode path: a model's tensors and a :class:`~nnpress.CodecConfig` in, the records the
``.nnp`` writer codes out (numpy only).

``nnpress.compress`` and the tuner (``tune.apply_plan``, ``tune.tune_to_budget``) both encode
through :func:`encode_model`, so what the tuner measures is what a file holds: the same plan, the
same levels (quantized with the file's row blocks, so the contexts restart where the writer's
chunks do), the same level parameters, the same reconstruction the decoder forms, and sizes from
the writer itself.

Contract
--------
- ``model_stats(entries, config, sensitivities=None, feedback=())``: mean and total element count
  of the tensors the config quantizes (the model-level inputs of the default step rule and of
  method "auto"), with per-weight output sensitivities the probe's step factors
  (``probe_factors``), and ``FEEDBACK_STEP_RATIO`` on the rule-4 steps of the tensors named in
  ``feedback`` (those with synthetic-input blocks) except embedding tables.
- ``data_free_hessians(source, entries, config)`` -> ``{name: column block}`` or None: the
  synthetic-input K-FAC blocks of an ``nn.Module`` source (``CodecConfig.synthetic_feedback``,
  ``nnpress.synthetic``); None for a state_dict or a file, a model that does not run on synthetic
  inputs, or with the option off.
- ``data_free_sensitivities(source, entries, config)`` -> ``{name: s_t}`` or None: the data-free
  probe of an ``nn.Module`` source (``CodecConfig.probe``); None for a state_dict or a file, for a
  model that does not run on synthetic inputs, or with the probe off.
- ``encode_tensor(entry, config, stats, *, importance=None, hessian=None, row_hessian=None)`` ->
  :class:`EncodedTensor`: the tensor's plan (``config.resolve``; tensors with NaN/inf values or an
  outlier beyond the quantizers' level range are stored exactly), its channel scale exponents (the
  plan's, or derived from ``importance`` with ``config.channel_scales``), pruning
  (``config.prune``; not of the tensors the fine rule quantizes), error feedback
  (``hessian``/``row_hessian``, prepared by ``quant.feedback_inputs``), quantization, and the record
  for the writer with the level parameters the quantizer picked for the final levels (the writer
  does not search again).
- ``encode_model(entries, config, *, importance, hessians, row_hessians, sensitivities,
  synthetic_hessians, progress)``: every entry, in order (aliases stay aliases).
- ``write_records(encoded, config, metadata)`` -> file bytes (and each report's stored bytes): one
  call into the C++ writer, which also checks that the bytes parse.
- :attr:`EncodedTensor.recon` is the float32 view of what the decoder returns for a quantized
  tensor (already rounded to its stored dtype), None for raw tensors and aliases.

Surprises
---------
- A tensor's rows per block come from ``config.block_elements``; the quantizer prices rate with
  contexts that restart at every block, exactly as the writer codes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .conditioning import condition_importance
from .config import FEEDBACK_STEP_RATIO, MAX_LEVEL, PROBE_FACTOR_LIMIT, CodecConfig, ResolvedPlan
from .container import NUMPY_DTYPES, TensorRecord, bfloat16_to_float32, float32_to_bfloat16, nnp_bytes
from .prune import prune_array
from .quant import _quantize_core, channel_scales, feedback_inputs, rows_cols
from .report import TensorReport
from .traverse import TensorEntry

__all__ = [
    "EncodedTensor",
    "ModelStats",
    "data_free_hessians",
    "data_free_sensitivities",
    "encode_model",
    "encode_tensor",
    "file_metadata",
    "model_stats",
    "probe_factors",
    "rows_per_block",
    "write_records",
]

FORMAT_PRODUCER = "nnpress"


@dataclass(frozen=True)
class ModelStats:
    """Model-level inputs of the step rules (``CodecConfig.resolve``)."""

    mean_size: float | None
    total_size: int
    step_factors: Mapping[str, float] | None = None  # factors of rule-4 steps, by name (probe, feedback)


@dataclass
class EncodedTensor:
    record: TensorRecord
    report: TensorReport
    recon: np.ndarray | None = None  # float32: what the decoder returns (quantized tensors only)


def model_stats(
    entries: Sequence[TensorEntry],
    config: CodecConfig,
    sensitivities: Mapping[str, float] | None = None,
    feedback=(),
) -> ModelStats:
    sizes = [e.count for e in entries if e.alias_of is None and e.count and config.quantizes(e.name, e.role, e.dtype)]
    stats = ModelStats(mean_size=sum(sizes) / len(sizes) if sizes else None, total_size=sum(sizes))
    factors = probe_factors(entries, config, stats, sensitivities) if sensitivities else {}
    feedback = set(feedback)
    for e in entries:  # feedback cancels part of a step's output error: coarser rule-4 steps
        if e.name not in feedback or e.alias_of is not None or e.role == "embedding":
            continue  # (an embedding row's error is all its token gets: its step stays rule 4's)
        if config.by_rule4(e.name, e.role, e.dtype):
            factors[e.name] = factors.get(e.name, 1.0) * FEEDBACK_STEP_RATIO
    if not factors:
        return stats
    return ModelStats(stats.mean_size, stats.total_size, factors)


def probe_factors(
    entries: Sequence[TensorEntry], config: CodecConfig, stats: ModelStats, sensitivities: Mapping[str, float]
) -> dict[str, float]:
    """The probe's factor m_t of each rule-4 step (``config`` module docstring, "Probe"): with a_t
    the rule-4 step and s_t the per-weight sensitivity, ``m_t = c / (sqrt(s_t) a_t)`` clipped to
    [1/PROBE_FACTOR_LIMIT, PROBE_FACTOR_LIMIT] (PROBE_FACTOR_LIMIT for s_t = 0), where
    ``c**2 = sum s_t n_t a_t**2 / sum n_t`` over the tensors with s_t > 0 keeps the predicted output
    distortion ``sum s_t n_t step_t**2`` at rule 4's. Tensors without a sensitivity, or not set
    by rule 4, get no factor."""
    steps, sens, sizes = {}, {}, {}
    for e in entries:
        if e.alias_of is not None or not e.count or e.name not in sensitivities:
            continue
        if not config.by_rule4(e.name, e.role, e.dtype):
            continue
        fvals = e.float_values()
        plan = _plan(e, fvals, config, stats)
        if plan.lossless:
            continue
        s = float(sensitivities[e.name])
        if not (s >= 0 and np.isfinite(s)):
            raise ValueError(f"{e.name!r}: sensitivity must be a finite number >= 0, got {s!r}")
        steps[e.name], sens[e.name], sizes[e.name] = plan.step, s, e.count
    live = [n for n in steps if sens[n] > 0]
    if not live:
        return {}
    c = float(np.sqrt(sum(sens[n] * sizes[n] * steps[n] ** 2 for n in live) / sum(sizes[n] for n in live)))
    lo, hi = 1.0 / PROBE_FACTOR_LIMIT, PROBE_FACTOR_LIMIT
    return {n: hi if sens[n] == 0 else min(max(c / (np.sqrt(sens[n]) * steps[n]), lo), hi) for n in steps}


def data_free_sensitivities(source, entries: Sequence[TensorEntry], config: CodecConfig) -> dict[str, float] | None:
    """The data-free probe's per-weight sensitivities (``tune.probe_sensitivities`` on
    ``nnpress.fisher.probe.synthetic_inputs``, the whole output seen through
    ``fisher.probe.output_fn_for``) of the rule-4 tensors of an ``nn.Module`` source; None when
    ``config.probe`` is off, the source is not a module (a state_dict or a file: nothing to run), or
    the model does not run on synthetic inputs. Deterministic (fixed seeds)."""
    if not config.probe or not hasattr(source, "named_parameters") or not hasattr(source, "forward"):
        return None
    from .fisher.probe import output_fn_for, synthetic_inputs
    from .tune import probe_sensitivities

    inputs = synthetic_inputs(source)
    if inputs is None:
        return None
    params = dict(source.named_parameters())
    names = [
        e.name
        for e in entries
        if e.alias_of is None and e.count and e.name in params and config.by_rule4(e.name, e.role, e.dtype)
    ]
    if not names:
        return None
    return probe_sensitivities(source, inputs, names, output_fn=output_fn_for(source, inputs))


def data_free_hessians(
    source, entries: Sequence[TensorEntry], config: CodecConfig, names: Mapping[str, str] | None = None
) -> dict[str, np.ndarray] | None:
    """The synthetic-input K-FAC column blocks of an ``nn.Module`` source's rule-4 Linear and
    Embedding weights (``nnpress.synthetic.synthetic_hessians``; a model folder loaded by
    ``nnpress.synthetic.folder_model`` too), by entry name; None when
    ``config.synthetic_feedback`` is off, the source is not a module (a state_dict or a file:
    nothing to run), or the model does not run on synthetic inputs. Deterministic (fixed seeds).
    ``names``: module tensor name -> entry name, where they differ."""
    from .synthetic import FolderModel, synthetic_hessians

    if not config.synthetic_feedback:
        return None
    if not isinstance(source, FolderModel) and not (hasattr(source, "named_modules") and hasattr(source, "forward")):
        return None

    return synthetic_hessians(source, entries, config, names)


def rows_per_block(shape: tuple, block_elements: int) -> int:
    """Rows per independently coded block of a tensor (whole rows, about ``block_elements``)."""
    rows, cols = rows_cols(shape)
    if rows == 0 or cols == 0:
        return 0
    return max(1, min(rows, block_elements // cols))


def _plan(e: TensorEntry, fvals: np.ndarray | None, config: CodecConfig, stats: ModelStats) -> ResolvedPlan:
    """``config.resolve``, except that values a quantizer cannot take are stored exactly."""
    if fvals is not None and e.count and not np.all(np.isfinite(fvals)):
        return ResolvedPlan(lossless=True)
    factor = 1.0 if stats.step_factors is None else stats.step_factors.get(e.name, 1.0)
    return config.resolve(
        e.name, e.role, e.dtype, fvals, mean_size=stats.mean_size, total_size=stats.total_size, step_factor=factor
    )


def _beyond_level_range(values: np.ndarray, step: float, row_scale, col_scale) -> bool:
    """Whether some |w_ij| / step_ij reaches the quantizers' level limit (``MAX_LEVEL``), with the
    channel scales' steps ``step_ij = (step * row_scale[i]) * col_scale[j]``."""
    peak = max(-float(values.min()), float(values.max()))
    if row_scale is None and col_scale is None:
        return peak / step >= MAX_LEVEL
    rows, cols = rows_cols(values.shape)
    r = np.ones(rows) if row_scale is None else row_scale
    c = np.ones(cols) if col_scale is None else col_scale
    if peak / (step * float(r.min()) * float(c.min())) < MAX_LEVEL:  # cheap bound first
        return False
    w = np.abs(values.reshape(rows, cols).astype(np.float64))
    return bool(np.any(w / ((step * r)[:, None] * c[None, :]) >= MAX_LEVEL))


def _scale_exps(plan: ResolvedPlan, imp, shape: tuple, derive: bool, name: str):
    """The channel scale exponents of one tensor (int8 arrays or None): the plan's, else derived from
    its importance when ``CodecConfig.channel_scales`` is on."""
    rows, cols = rows_cols(shape)
    row_exp = None if plan.row_scale_exp is None else np.asarray(plan.row_scale_exp, np.int8)
    col_exp = None if plan.col_scale_exp is None else np.asarray(plan.col_scale_exp, np.int8)
    if row_exp is None and col_exp is None and derive and imp is not None and len(shape) >= 2:
        from .tune import channel_scales_from_importance

        derived = channel_scales_from_importance({name: np.asarray(imp).reshape(shape)})
        row_exp, col_exp = derived.get(name, (None, None))
    for what, e, n in (("row", row_exp, rows), ("column", col_exp, cols)):
        if e is not None and e.size != n:
            raise ValueError(f"{name!r}: {e.size} {what} scale exponents, the tensor has {n} {what}s")
    return row_exp, col_exp


_CHUNK = 1 << 20  # elements per step of the loops below, which hold no full-size temporaries


def _rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """||w - w_hat|| / ||w||, accumulated in float64 chunk by chunk (no full-size temporaries)."""
    fw, fh = w.reshape(-1), w_hat.reshape(-1)
    dt = np.float64 if w.dtype == np.float64 else np.float32
    num = den = 0.0
    for i in range(0, fw.size, _CHUNK):
        a = fw[i : i + _CHUNK]
        den += float(np.sum(np.square(a, dtype=np.float64)))
        num += float(np.sum(np.square(np.subtract(a, fh[i : i + _CHUNK], dtype=dt), dtype=np.float64)))
    num, den = float(np.sqrt(num)), float(np.sqrt(den))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def _as_stored(recon: np.ndarray, dtype: str) -> np.ndarray:
    """The values the decoder produces for a float32 reconstruction stored as ``dtype``, rounded
    in place (``recon`` is the quantizer's own output), chunk by chunk."""
    if dtype not in ("float16", "bfloat16"):
        return recon
    recon = np.ascontiguousarray(recon)  # (so that the flat view below writes into it)
    flat = recon.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        c = flat[i : i + _CHUNK]
        c[...] = c.astype(np.float16) if dtype == "float16" else bfloat16_to_float32(float32_to_bfloat16(c))
    return recon


def _float_array(x) -> np.ndarray:
    """An importance (numpy or torch, any device) as a float numpy array."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=np.float32)


def _float64(x):
    """A feedback block (numpy or torch, any device) as float64 numpy, or None."""
    if x is None:
        return None
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def _stored_exactly(e: TensorEntry, orig_bytes: int) -> EncodedTensor:
    return EncodedTensor(
        TensorRecord(e.name, e.dtype, e.role, "raw", e.shape, data=e.values),
        TensorReport(e.name, e.shape, e.dtype, e.role, "raw", None, None, e.count, orig_bytes, 0, 0.0),
    )


def encode_tensor(
    e: TensorEntry, config: CodecConfig, stats: ModelStats, *, importance=None, hessian=None, row_hessian=None
) -> EncodedTensor:
    """One tensor through plan -> scales -> pruning -> quantization -> record (module docstring)."""
    orig = e.count * NUMPY_DTYPES[e.dtype].itemsize
    if e.alias_of is not None:
        return EncodedTensor(
            TensorRecord(e.name, e.dtype, e.role, "alias", e.shape, alias_of=e.alias_of),
            TensorReport(
                e.name, e.shape, e.dtype, e.role, "alias", None, None, e.count, orig, 0, 0.0, alias_of=e.alias_of
            ),
        )
    fvals = e.float_values() if e.is_float else None
    plan = _plan(e, fvals, config, stats)
    if plan.lossless:
        return _stored_exactly(e, orig)
    rpb = rows_per_block(e.shape, config.block_elements)
    # conditioned whatever the caller passed: zero importance would let weights quantize to zero
    imp = None if importance is None else condition_importance(_float_array(importance), e.shape, e.role, e.name)
    # derived channel scales, like pruning, are for rules 1-4: a fine (constant) step stays exact
    derive = config.channel_scales and config.quantizes(e.name, e.role, e.dtype)
    row_exp, col_exp = _scale_exps(plan, imp, e.shape, derive, e.name)
    row_scale = None if row_exp is None else channel_scales(row_exp)
    col_scale = None if col_exp is None else channel_scales(col_exp)
    if e.count and _beyond_level_range(fvals, plan.step, row_scale, col_scale):  # an outlier: keep it exact
        return _stored_exactly(e, orig)
    unary_len = eg_order = None
    recon = None
    if e.count:
        try:  # name the tensor: pruning, feedback and the quantizer know only shapes and indices
            # pruning is for the weights rules 1-4 quantize, not for near-lossless fine roles
            prune = config.prune > 0 and config.quantizes(e.name, e.role, e.dtype)
            qvals = prune_array(fvals, config.prune, imp) if prune else fvals
            imp_q, hess, row_hess = feedback_inputs(e.shape, imp, _float64(hessian), _float64(row_hessian))
            levels, recon, result = _quantize_core(
                qvals,
                plan.step,
                plan.lam,
                imp_q,
                plan.method,
                rows_per_block=rpb or None,
                threads=config.threads,
                want_recon=True,
                row_scale=row_scale,
                col_scale=col_scale,
                hessian=hess,
                hessian_damp=config.hessian_damp,
                row_hessian=row_hess,
            )
        except ValueError as exc:
            raise ValueError(f"{e.name!r}: {exc}") from exc
        # the params the writer would pick for these levels: it codes with them instead of searching
        unary_len, eg_order = int(result.coded_params.unary_len), int(result.coded_params.eg_order)
        recon = _as_stored(recon, e.dtype)
        err = _rel_error(fvals, recon)  # against the unpruned weights
    else:
        levels, err = np.zeros(e.shape, dtype=np.int32), 0.0
    record = TensorRecord(
        e.name,
        e.dtype,
        e.role,
        "quantized",
        e.shape,
        data=levels,
        method=plan.method,
        step=plan.step,
        lam=plan.lam,
        rows_per_block=rpb,
        unary_len=unary_len,
        eg_order=eg_order,
        row_scale_exp=row_exp,
        col_scale_exp=col_exp,
    )
    report = TensorReport(e.name, e.shape, e.dtype, e.role, "quantized", plan.method, plan.step, e.count, orig, 0, err)
    return EncodedTensor(record, report, recon)


def encode_model(
    entries: Sequence[TensorEntry],
    config: CodecConfig,
    *,
    importance: Mapping[str, Any] | None = None,
    hessians: Mapping[str, Any] | None = None,
    row_hessians: Mapping[str, Any] | None = None,
    sensitivities: Mapping[str, float] | None = None,
    synthetic_hessians: Mapping[str, Any] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[EncodedTensor]:
    """Every entry through :func:`encode_tensor`, in entry order (``sensitivities``: per-weight
    output sensitivities of rule-4 tensors, e.g. ``data_free_sensitivities``, for the probe's
    step factors; ``synthetic_hessians``: column blocks from ``data_free_hessians``, used for error
    feedback like ``hessians`` (which take precedence per tensor) and making those tensors' rule-4
    steps ``FEEDBACK_STEP_RATIO`` coarser, embedding tables excepted); ``progress(0, total, "")`` first,
    then ``progress(done, total, name)`` as each tensor finishes. Tensors are encoded concurrently
    on ``config.threads`` threads (the C++ quantizers release the GIL, and each tensor's row blocks
    use the same worker pool): the result does not depend on the thread count."""
    synthetic = dict(synthetic_hessians or {})
    if hessians:
        synthetic = {k: v for k, v in synthetic.items() if k not in hessians}
    stats = model_stats(entries, config, sensitivities, feedback=synthetic)
    if synthetic:
        hessians = {**synthetic, **(hessians or {})}
    total = len(entries)

    def one(e: TensorEntry) -> EncodedTensor:
        return encode_tensor(
            e,
            config,
            stats,
            importance=None if importance is None else importance.get(e.name),
            hessian=None if hessians is None else hessians.get(e.name),
            row_hessian=None if row_hessians is None else row_hessians.get(e.name),
        )

    if progress is not None:
        progress(0, total, "")
    workers = min(config.n_threads, total)
    if workers <= 1:
        out = []
        for i, e in enumerate(entries):
            out.append(one(e))
            if progress is not None:
                progress(i + 1, total, e.name)
        return out
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nnpress-encode") as pool:
        futures = {pool.submit(one, e): e.name for e in entries}
        done = 0
        for f in as_completed(futures):
            if f.exception() is not None:
                for g in futures:
                    g.cancel()
                break
            done += 1
            if progress is not None:
                progress(done, total, futures[f])
    for f in futures:  # (all have finished or were cancelled) the first failure in entry order
        if not f.cancelled() and f.exception() is not None:
            raise f.exception()
    return [f.result() for f in futures]


def file_metadata(config: CodecConfig, probed: bool = False, synthetic_feedback: bool = False) -> dict:
    """What a file records of the config that wrote it. The plan's entries are in the tensor table
    already (step, method, lambda), so only their count is kept, under the key ``overrides`` that
    files have always used (docs/FORMAT.md). ``probed``: the data-free probe set rule-4 steps (a
    ``"probe": true`` entry; absent otherwise). ``synthetic_feedback``: synthetic-input blocks
    were used for error feedback (a ``"synthetic_feedback": true`` entry; absent otherwise)."""
    from . import __version__

    stored = config.to_dict()
    stored.pop("threads", None)  # does not change the bytes, so it is not recorded
    stored["overrides"] = len(stored.pop("plan"))
    meta = {"producer": FORMAT_PRODUCER, "nnpress_version": __version__, "config": stored}
    if probed:
        meta["probe"] = True
    if synthetic_feedback:
        meta["synthetic_feedback"] = True
    return meta


def write_records(encoded: Sequence[EncodedTensor], config: CodecConfig, metadata: dict | None = None) -> bytes:
    """The ``.nnp`` bytes of encoded tensors (checked to parse); fills each report's
    ``stored_bytes``."""
    data, stored = nnp_bytes(
        [t.record for t in encoded], block_elements=config.block_elements, threads=config.threads, metadata=metadata
    )
    for t, s in zip(encoded, stored):
        t.report.stored_bytes = int(s)
    return data
