"""The smallest file for the fidelity you choose: :func:`compress_to_budget` (issue 14).

Given a :class:`nnpress.calibration.Task` (a model and calibration batches split into ``fit`` and
``heldout``) and a :class:`~nnpress.calibration.Budget` (``"cos_mean=0.999"``), it runs the whole
calibrated pipeline and writes the smallest ``.nnp`` whose held-out fidelity meets the budget.

Pipeline (estimated from ``task.fit`` only; nothing estimated ever sees ``task.heldout``)
------------------------------------------------------------------------------------------
1. Error feedback where it is bounded: K-FAC column blocks (``fisher_hessians``) for ``nn.Linear``
   and ``nn.Embedding`` weights with at most ``FEEDBACK_MAX_COLS`` columns and at most
   ``FEEDBACK_MAX_WORK`` = rows x cols² (the trellis with feedback does O(8 cols²) work per row),
   and row blocks (``fisher_row_hessians``) for Linear weights with at most ``FEEDBACK_MAX_ROWS``
   rows and rows² x cols within the same work bound. Blocks are taken in model order while their
   float64 storage stays within ``FEEDBACK_MEMORY`` bytes; every other tensor is quantized without
   feedback (convolutions have no K-FAC block here). Both sides come from one pass over the fit
   batches (``fisher_kfac_blocks``).
2. Fisher diagonal (``fisher_diagonal``, the task's likelihood and output) of the other quantized
   parameters, on at most ``max(FISHER_MIN_EXAMPLES, FISHER_EXAMPLE_WEIGHTS / parameters)`` fit
   examples (per-example gradients cost examples x parameters). An embedding table with a column
   block takes its Fisher from ``diag(H) / rows`` (H's diagonal is the Fisher's column sums): its
   rows are uniform below anyway, and its per-example gradients are the costliest part of the
   diagonal. From these: per-tensor sensitivities (step allocation), per-weight importance (rank-1
   smoothed, ``tune.smooth_importance``; embedding rows uniform) for the trellis, and channel scales
   (``tune.channel_scales_from_importance``, strength ``CHANNEL_SCALE_STRENGTH``).
3. ``tune.allocate_steps`` turns one global step into a plan for every quantized tensor (trellis,
   everything else stored exactly), and the search below picks the step.

The search
----------
Every point is a whole encode through the one encode path (``nnpress.encode``) scored with
``task.evaluate`` on the held-out batches; its size is the size of the file. The metric's distance
from a perfect copy (``1 - value`` for cosines and top-1 agreement, the value itself for KL,
relative error and accuracy drop) falls about as step² (relative error: as the step), so the
search extrapolates in log-log space from the first point, re-estimating the slope from the points
it has, until it brackets the budget; then it interpolates inside the bracket (kept from collapsing
onto one end) until the bracket is narrower than ``tolerance`` (relative step) or ``max_encodes``
encodes were made. The smallest file among the points that meet the budget wins.

A point meets the budget when its held-out value does with a margin of ``MARGIN_Z`` standard errors
of the held-out mean (for metrics that are means over samples: ``cos_mean``, ``kl``, ``top1``), so
that the promise holds on new inputs of the same kind and not only on the held-out samples that
chose the step: with few held-out samples the margin is wide, with many it vanishes.

Pruning (``prune="auto"``) is a second dimension: after the step search without pruning, sparsity
targets above the zero fraction the quantizer already reached are tried in increasing order (each
with its own step search, started from the last best step), stopping at the first that does not
give a smaller file. Pruning ranks weights by Fisher saliency ``F·w²`` with one global threshold
(``nnpress.prune``); bench/RESULTS.md ("Pruning") compares the variants. The sparsity dimension is
searched only for models of at most ``PRUNE_SEARCH_MAX_WEIGHTS`` quantized weights (every sparsity
costs a step search); ``prune=0``/``None`` turns it off, a number fixes the sparsity.

Deterministic for a given ``seed`` (the Fisher and K-FAC draws); the file is written atomically
and only when the budget is met. :class:`BudgetError` (a ``ValueError``) otherwise, with the best
fidelity reached at the finest step tried and the report of every point (``err.report``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .calibration import METRICS, Budget, Task, parse_budget
from .config import ROLES, CodecConfig
from .container import file_destination, write_bytes_atomic
from .encode import encode_model, file_metadata, write_records
from .prune import prune as prune_weights
from .quant import has_curvature
from .traverse import collect

__all__ = ["BudgetError", "BudgetReport", "compress_to_budget"]

CHANNEL_SCALE_STRENGTH = 0.3
FEEDBACK_MAX_COLS = 4096
FEEDBACK_MAX_ROWS = 4096
FEEDBACK_MAX_WORK = 1 << 33
FEEDBACK_MEMORY = 1 << 30
KFAC_DRAWS = 8
FISHER_MIN_EXAMPLES = 64
PRUNE_SEARCH_MAX_WEIGHTS = 1 << 21
PRUNE_SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
MARGIN_Z = 1.0  # standard errors of the held-out mean a point must clear the budget by
START_REL_STEP = 2.0**-4  # first point: this times the RMS of the quantized weights
MIN_REL_STEP = 2.0**-12  # the finest step the search tries
STALL = 0.9  # a finer step that keeps more than this fraction of the distance ends a search that only missed
FISHER_EXAMPLE_WEIGHTS = 1 << 30  # per-example gradients: at most this many examples x parameters


class BudgetError(ValueError):
    """The budget cannot be met (or the search could not run); nothing was written.
    ``report`` holds every point tried (a :class:`BudgetReport` with ``met=False``), when any."""

    def __init__(self, message: str, report: BudgetReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class BudgetReport:
    """What :func:`compress_to_budget` did. ``points``: every encode tried, in order
    (``bits_per_param``, ``file_bytes``, ``metrics`` on the held-out batches, ``seconds``,
    ``setting``: ``step`` (global), ``rel_step`` (over the weights' RMS), ``sparsity``); ``chosen``:
    index of the written one; ``tensors``: per-tensor bits, step, method and zero fraction of the
    written file; ``heldout``: the metrics of the written file, decoded from disk; ``times``:
    seconds per stage."""

    budget: str
    met: bool
    chosen: int | None
    points: list[dict]
    tensors: list[dict]
    heldout: dict[str, float]
    split: dict
    times: dict[str, float]
    path: str | None
    file_bytes: int
    params: int
    pipeline: dict = field(default_factory=dict)

    @property
    def bits_per_param(self) -> float:
        return 8.0 * self.file_bytes / self.params if self.params else 0.0

    def to_dict(self) -> dict:
        return {
            "budget": self.budget,
            "met": self.met,
            "chosen": self.chosen,
            "points": [dict(p) for p in self.points],
            "tensors": [dict(t) for t in self.tensors],
            "heldout": dict(self.heldout),
            "split": dict(self.split),
            "times": dict(self.times),
            "path": self.path,
            "file_bytes": self.file_bytes,
            "params": self.params,
            "bits_per_param": self.bits_per_param,
            "pipeline": dict(self.pipeline),
        }

    def table(self) -> str:
        """Every point tried, one line each; the chosen one marked."""
        lines = [f"budget {self.budget}: {'met' if self.met else 'NOT met'}"]
        for i, p in enumerate(self.points):
            s = p["setting"]
            ms = " ".join(f"{k}={v:.6g}" for k, v in p["metrics"].items())
            mark = "*" if i == self.chosen else " "
            lines.append(
                f"{mark} rel_step {s['rel_step']:.4g} sparsity {s['sparsity']:.2f}: "
                f"{p['bits_per_param']:.4f} bits/param, {ms} ({p['seconds']:.1f}s)"
            )
        return "\n".join(lines)


def _distance(metric: str, value: float) -> float:
    """How far ``value`` is from a perfect copy (0), in the metric's own unit."""
    return 1.0 - value if METRICS[metric].higher_is_better else value


def _eligible_blocks(model, file_name: Callable[[str], str], quantized: set[str]) -> tuple[set[str], set[str]]:
    """Module names whose weight gets a K-FAC column block / a row block (module docstring, rule 2)."""
    import torch

    cols_ok, rows_ok = set(), set()
    mem = 0
    for mname, mod in model.named_modules():
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
            continue
        pname = (mname + "." if mname else "") + "weight"
        if file_name(pname) not in quantized:
            continue
        rows, cols = mod.weight.shape
        if (
            cols <= FEEDBACK_MAX_COLS
            and rows * cols * cols <= FEEDBACK_MAX_WORK
            and mem + 8 * cols * cols <= FEEDBACK_MEMORY
        ):
            cols_ok.add(mname)
            mem += 8 * cols * cols
        if (
            isinstance(mod, torch.nn.Linear)
            and rows <= FEEDBACK_MAX_ROWS
            and rows * rows * cols <= FEEDBACK_MAX_WORK
            and mem + 8 * rows * rows <= FEEDBACK_MEMORY
        ):
            rows_ok.add(mname)
            mem += 8 * rows * rows
    return cols_ok, rows_ok


def _numpy64(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, np.float64)


def compress_to_budget(
    task: Task,
    dest,
    budget: str | Budget | Mapping[str, float],
    *,
    config: CodecConfig | None = None,
    prune: str | float | None = "auto",
    feedback: str | bool = "auto",
    prune_by: str = "fisher",
    seed: int = 0,
    tolerance: float = 0.03,
    max_encodes: int = 8,
    progress: Callable[[str, int, int], None] | None = None,
) -> BudgetReport:
    """Write to ``dest`` the smallest file whose held-out fidelity meets ``budget`` (module
    docstring). ``config``: its ``threads``, ``block_elements``, ``hessian_damp`` and ``plan``
    (entries override the search's, e.g. a tensor kept exact) are used; the steps are the search's.
    ``prune``: "auto", None/0 (no pruning) or a fixed sparsity in (0, 1); ``prune_by``: the
    saliency, "fisher" (``F·w²``) or "magnitude" (``w²``), one global threshold. ``feedback``: "auto"
    (the bounded rule) or False. ``progress(stage, done, total)``: stages "fisher", "kfac",
    "search" (done = encodes made, total = the most it may make), "write"."""
    t_start = time.perf_counter()
    budget = parse_budget(budget)
    if not isinstance(task, Task):
        raise TypeError(f"task must be a nnpress.calibration.Task, not {type(task).__name__}")
    task.check_budget(budget)
    config = CodecConfig() if config is None else config
    if not isinstance(config, CodecConfig):
        raise TypeError(f"config must be a CodecConfig, not {type(config).__name__}")
    if prune_by not in ("fisher", "magnitude"):
        raise ValueError(f"prune_by must be 'fisher' or 'magnitude', got {prune_by!r}")
    if feedback not in ("auto", True, False):
        raise ValueError(f"feedback must be 'auto' or False, got {feedback!r}")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ValueError(f"tolerance must lie in (0, 1), got {tolerance!r}")
    if not (isinstance(max_encodes, int) and max_encodes >= 2):
        raise ValueError(f"max_encodes must be an int >= 2, got {max_encodes!r}")
    sparsities = _sparsities(prune)
    dest = file_destination(dest)
    report_progress = progress or (lambda stage, done, total: None)
    times: dict[str, float] = {}

    # --- the model's tensors under the file's names ------------------------------------------
    import torch

    model = task.model
    names = dict(task.names or {})

    def file_name(module_name: str) -> str:
        return names.get(module_name, module_name)

    state = model.state_dict()
    # what the file stores: the module's tensors under the checkpoint's names and dtypes, plus the
    # checkpoint's tensors the module does not hold (written exactly, never scored)
    source = {k: v.detach() for k, v in task.state_dict().items()}
    entries = collect(source)
    module_of = {file_name(k): k for k in state}
    quantized = [
        e.name
        for e in entries
        if e.name in module_of and e.alias_of is None and e.is_float and len(e.shape) >= 2 and e.count
    ]
    if not quantized:
        raise BudgetError("the model has no floating-point tensor of rank >= 2 to quantize")
    weights = {e.name: e.float_values() for e in entries if e.name in set(quantized)}
    n_params = sum(e.count for e in entries if e.alias_of is None)
    n_quant = sum(weights[n].size for n in quantized)
    if prune == "auto" and n_quant > PRUNE_SEARCH_MAX_WEIGHTS:
        sparsities = (0.0,)  # every sparsity costs a step search of whole encodes: only small models
    embedding_names = [e.name for e in entries if e.name in set(quantized) and e.role == "embedding"]
    embeddings = tuple(embedding_names) + ("embed",)
    times["load"] = time.perf_counter() - t_start

    # --- K-FAC blocks where bounded ------------------------------------------------------------
    t0 = time.perf_counter()
    from .fisher import fisher_diagonal, fisher_kfac_blocks
    from .tune import allocate_steps, channel_scales_from_importance, sensitivities_from_fisher, smooth_importance

    qset = set(quantized)
    hessians: dict[str, np.ndarray] = {}
    row_hessians: dict[str, np.ndarray] = {}
    if feedback:
        cols_ok, rows_ok = _eligible_blocks(model, file_name, qset)
        report_progress("kfac", 0, 1)
        with warnings.catch_warnings():  # modules the output never used get no block: no feedback there
            warnings.simplefilter("ignore", RuntimeWarning)
            if cols_ok or rows_ok:  # both sides from one pass over the fit batches
                h, g = fisher_kfac_blocks(
                    model, task.fit, output=task.fisher_output, columns=cols_ok, rows=rows_ok,
                    output_fn=task.output_fn, seed=seed, draws=KFAC_DRAWS,
                )  # fmt: skip
                # a block with no curvature (a layer the outputs do not depend on, e.g. behind dead
                # units, or weights an earlier search set to zero) gives feedback nothing to weigh:
                # that tensor goes without feedback
                hessians, row_hessians = (
                    {
                        file_name(k): b
                        for k, v in side.items()
                        if file_name(k) in qset and has_curvature(b := _numpy64(v))
                    }
                    for side in (h, g)
                )
        report_progress("kfac", 1, 1)
    times["kfac"] = time.perf_counter() - t0

    # --- Fisher diagonal, importance, channel scales -------------------------------------------
    t0 = time.perf_counter()
    report_progress("fisher", 0, 1)
    # embedding tables with a column block: their Fisher column sums are diag(H) (kfac.py), all the
    # pipeline uses of an embedding (its rows are uniform), and per-example gradients of a big table
    # are the most expensive part of the diagonal
    from_blocks = {n for n in embedding_names if n in hessians}
    params = [n for n, _ in model.named_parameters() if file_name(n) in qset and file_name(n) not in from_blocks]
    fisher = {}
    if params:
        own = dict(model.named_parameters())
        cap = max(FISHER_MIN_EXAMPLES, FISHER_EXAMPLE_WEIGHTS // max(1, sum(own[n].numel() for n in params)))
        fisher = fisher_diagonal(
            model, task.fit, mode="sampled", output=task.fisher_output, param_filter=params,
            max_examples=cap, output_fn=task.output_fn, seed=seed,
        )  # fmt: skip
        fisher = {file_name(k): v for k, v in fisher.items()}
    for n in from_blocks:
        rows = weights[n].shape[0]
        fisher[n] = np.broadcast_to(np.diag(hessians[n]) / rows, weights[n].shape)
    sens, imp_raw = sensitivities_from_fisher(fisher)
    if not fisher:
        raise BudgetError("no quantized tensor is a parameter of the model: nothing to estimate a Fisher for")
    imp = smooth_importance(imp_raw, uniform_rows=embeddings)
    scales = channel_scales_from_importance(imp_raw, strength=CHANNEL_SCALE_STRENGTH, uniform_rows=embeddings)
    times["fisher"] = time.perf_counter() - t0
    report_progress("fisher", 1, 1)

    # --- the search ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    damp = config.hessian_damp
    rms = math.sqrt(sum(float(np.square(weights[n], dtype=np.float64).sum()) for n in quantized) / max(n_quant, 1))
    if not rms > 0:
        raise BudgetError("the quantized tensors are all zero: there is nothing to search")
    user_plan = dict(config.plan)
    no_plan: dict = {}
    search_cfg_base = replace(
        config, plan=no_plan, overrides=no_plan, lossless_roles=ROLES, prune=0.0, channel_scales=False
    )  # (overrides: the InitVar dataclasses.replace would copy)
    imp_q = {n: imp[n] for n in quantized if n in imp}
    fisher_np = {n: _numpy64(fisher[n]) for n in quantized if n in fisher}
    metric = budget.metric
    target = _distance(metric, budget.value)
    slope0 = 1.0 if metric == "rel_error" else 2.0
    points: list[dict] = []
    best: dict[str, Any] = {}
    if target < 0:
        raise BudgetError(f"budget {budget} asks for more than the original model gives ({metric} of a perfect copy)")

    pruned_cache: dict[float, tuple] = {}

    def pruned(sparsity: float):
        if sparsity not in pruned_cache:
            if sparsity == 0:
                pruned_cache[sparsity] = (entries, weights)
            else:
                imp_all = None
                if prune_by == "fisher":
                    imp_all = {n: fisher_np.get(n, np.zeros_like(weights[n])) for n in quantized}
                pw = prune_weights(weights, sparsity, importance=imp_all, scope="global", names=quantized)
                src = dict(source)
                for n in quantized:
                    src[n] = torch.from_numpy(np.ascontiguousarray(pw[n]).astype(weights[n].dtype, copy=False))
                pruned_cache.clear()  # keep one pruned copy of the model at a time
                pruned_cache[sparsity] = (collect(src), {n: pw[n] for n in quantized})
        return pruned_cache[sparsity]

    budget_encodes = max_encodes * (1 + (len(sparsities) - 1 if sparsities[0] == 0 else len(sparsities)))

    def point(step: float, sparsity: float) -> dict:
        t = time.perf_counter()
        ents, ws = pruned(sparsity)
        plan = allocate_steps(
            ws, step, sens, method="trellis", names=quantized, channel_scales=scales, importance=imp,
            hessians=hessians, hessian_damp=damp,
        )  # fmt: skip
        plan = {n: replace(p, lossless=False) for n, p in plan.items()}
        plan.update(user_plan)
        cfg = replace(search_cfg_base, plan=plan, overrides=plan)
        encoded = encode_model(ents, cfg, importance=imp_q, hessians=hessians, row_hessians=row_hessians)
        data = write_records(encoded, cfg, file_metadata(cfg))
        by_name = {t.record.name: t for t in encoded}
        decoded = {}
        for n in quantized:
            rec = by_name[n]
            decoded[module_of[n]] = rec.recon if rec.record.storage == "quantized" else ws[n]
        metrics, errors = task.evaluate(decoded, standard_errors=True)
        se = float(errors.get(metric, 0.0))
        value = float(metrics[metric])
        p = {
            "bits_per_param": 8.0 * len(data) / n_params,
            "file_bytes": len(data),
            "metrics": {k: float(v) for k, v in metrics.items()},
            "standard_error": se,
            # the value the budget is checked on: the held-out value, a margin of MARGIN_Z standard
            # errors towards the wrong side
            "budget_value": value - MARGIN_Z * se if budget.higher_is_better else value + MARGIN_Z * se,
            "seconds": time.perf_counter() - t,
            "setting": {"step": step, "rel_step": step / rms, "sparsity": sparsity},
        }
        p["met"] = budget.met(p["budget_value"])
        points.append(p)
        report_progress("search", len(points), budget_encodes)
        if p["met"] and ("point" not in best or p["file_bytes"] < best["point"]["file_bytes"]):
            best.update(point=p, index=len(points) - 1, data=data, tensors=_tensor_rows(encoded))
        return p

    x_min = math.log(rms * MIN_REL_STEP)
    step_logs = {}  # sparsity -> log step of its best point
    x_start = math.log(rms * START_REL_STEP)
    best_by_sparsity: dict[float, dict] = {}
    for s in sparsities:
        if s > 0 and best_by_sparsity:
            zeros = best.get("zeros", 0.0)
            if s <= zeros:
                continue
        res = _search_step(point, s, x_start, x_min, target, metric, slope0, tolerance, max_encodes)
        if res is None:
            break  # (pruning on top of a miss cannot help)
        best_by_sparsity[s] = res
        step_logs[s] = math.log(res["setting"]["step"])
        if s == 0:
            best["zeros"] = _zero_fraction(best.get("tensors", []))
        x_start = step_logs[s]
        if s > 0 and res is not best["point"]:
            break  # a higher sparsity gave no smaller file
    times["search"] = time.perf_counter() - t0

    split = dict(task.split or {})
    if "point" not in best:
        finest = min(points, key=lambda p: p["setting"]["step"]) if points else None
        report = BudgetReport(
            budget=str(budget), met=False, chosen=None, points=points, tensors=[], heldout={}, split=split,
            times=times, path=None, file_bytes=0, params=n_params,
            pipeline=_pipeline(hessians, row_hessians, sparsities),
        )  # fmt: skip
        reached = "no point was encoded" if finest is None else (
            f"the best {metric} reached is {finest['metrics'][metric]!r} at the finest step tried "
            f"(rel_step {finest['setting']['rel_step']:.3g}, {finest['bits_per_param']:.3f} bits/param)"
        )  # fmt: skip
        raise BudgetError(
            f"budget {budget} cannot be met on the held-out calibration data: {reached}; nothing written", report
        )

    # --- write the winner, check it from disk --------------------------------------------------
    t0 = time.perf_counter()
    report_progress("write", 0, 1)
    write_bytes_atomic(dest, best["data"])
    from .api import decompress

    dec = decompress(dest, as_numpy=True)
    heldout = {k: float(v) for k, v in task.evaluate({module_of[n]: dec[n] for n in quantized}).items()}
    times["write"] = time.perf_counter() - t0
    report_progress("write", 1, 1)
    times["total"] = time.perf_counter() - t_start
    return BudgetReport(
        budget=str(budget),
        met=True,
        chosen=best["index"],
        points=points,
        tensors=best["tensors"],
        heldout=heldout,
        split=split,
        times=times,
        path=dest,
        file_bytes=len(best["data"]),
        params=n_params,
        pipeline=_pipeline(hessians, row_hessians, sparsities),
    )


def _sparsities(prune) -> tuple[float, ...]:
    if prune == "auto":
        return (0.0,) + PRUNE_SPARSITIES
    if prune is None:
        return (0.0,)
    if isinstance(prune, bool) or not isinstance(prune, (int, float)):
        raise TypeError(f"prune must be 'auto', None or a sparsity in [0, 1), got {prune!r}")
    if not (0.0 <= float(prune) < 1.0):
        raise ValueError(f"prune must lie in [0, 1), got {prune!r}")
    return (float(prune),)


def _pipeline(hessians, row_hessians, sparsities) -> dict:
    return {
        "feedback_columns": sorted(hessians),
        "feedback_rows": sorted(row_hessians),
        "sparsities": list(sparsities),
        "channel_scale_strength": CHANNEL_SCALE_STRENGTH,
        "kfac_draws": KFAC_DRAWS,
    }


def _tensor_rows(encoded) -> list[dict]:
    rows = []
    for t in encoded:
        r = t.record
        if r.storage == "alias":
            continue
        bits = 8.0 * t.report.stored_bytes
        q = r.storage == "quantized"
        zeros = float(np.count_nonzero(r.data == 0)) / r.data.size if q and r.data.size else 0.0
        rows.append(
            {
                "name": r.name,
                "bits": bits,
                "bits_per_param": bits / t.report.params if t.report.params else 0.0,
                "step": float(r.step) if q else None,
                "method": r.method if q else "exact",
                "sparsity": zeros,
                "params": t.report.params,
            }
        )
    return rows


def _zero_fraction(rows: list[dict]) -> float:
    q = [r for r in rows if r["step"] is not None]
    n = sum(r["params"] for r in q)
    return sum(r["sparsity"] * r["params"] for r in q) / n if n else 0.0


def _search_step(point, sparsity, x_start, x_min, target, metric, slope0, tolerance, max_encodes):
    """The step search for one sparsity (module docstring): returns the smallest point meeting the
    budget, or None."""
    width = math.log1p(tolerance)
    lo = hi = None  # (log step, distance): the largest step that met, the smallest that missed
    slope = slope0
    seen: list[tuple[float, float]] = []
    met_points = []
    x = x_start
    for _ in range(max_encodes):
        p = point(math.exp(x), sparsity)
        d = _distance(metric, p["budget_value"])
        d = d if math.isfinite(d) else math.inf
        seen.append((x, d))
        if p["met"]:
            met_points.append(p)
            if lo is None or x > lo[0]:
                lo = (x, d)
        elif hi is None or x < hi[0]:
            hi = (x, d)
        pos = sorted((a, b) for a, b in seen if b > 0)
        if len(pos) >= 2 and pos[-1][0] > pos[0][0]:
            k = (math.log(pos[-1][1]) - math.log(pos[0][1])) / (pos[-1][0] - pos[0][0])
            slope = min(max(k, 0.5), 4.0) if math.isfinite(k) else slope
        if lo is not None and hi is not None:
            if hi[0] <= lo[0]:  # a noisy metric: a finer step missed; refine just above the best
                break
            if hi[0] - lo[0] <= width:
                break
            t = 0.5
            if lo[1] > 0 and hi[1] > lo[1] and target > 0:
                t = (math.log(target) - math.log(lo[1])) / (math.log(hi[1]) - math.log(lo[1]))
            x = lo[0] + min(max(t, 0.25), 0.75) * (hi[0] - lo[0])
        elif lo is not None:  # every point met: coarser
            jump = (math.log(target) - math.log(lo[1])) / slope if lo[1] > 0 and target > 0 else math.log(4.0)
            x = lo[0] + min(max(jump, 2 * width), math.log(8.0))
        else:  # every point missed: finer
            if hi[0] <= x_min + 1e-12:
                break
            if len(seen) >= 2 and seen[-1][0] < seen[-2][0] and seen[-1][1] > STALL * seen[-2][1]:
                break  # a finer step barely helped: something else (e.g. pruning) holds the metric back
            jump = (math.log(hi[1]) - math.log(target)) / slope if hi[1] > 0 and target > 0 else math.log(4.0)
            x = max(hi[0] - min(max(jump, 2 * width), math.log(16.0)), x_min)
    if not met_points:
        return None
    return min(met_points, key=lambda p: p["file_bytes"])
