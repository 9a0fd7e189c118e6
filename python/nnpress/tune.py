"""Step sizes, bit allocation and tuning to a fidelity budget (numpy only; torch only for the
helpers that measure sensitivity on a model).

The model of the trade-off
--------------------------
Quantizing tensor t with step D_t adds output distortion about ``s_t * n_t * D_t**2 / 12`` (s_t:
the tensor's mean per-weight sensitivity, e.g. its mean Fisher information; n_t: its size) and
costs about ``n_t * (h_t - log2 D_t)`` bits. Minimising distortion + mu * rate over all D_t gives

    D_t = step * sqrt(s_ref / s_t)            (s_ref: geometric mean of the s_t)

so one global knob ``step`` sets every tensor's step, and each tensor gets finer or coarser by the
square root of how much the output cares about it. Never from a tensor's maximum: outliers would
set the grid (real models have tensors whose max|w| is over 100 standard deviations). Inside a tensor, rate-distortion
quantization (``"rdoq"``/``"trellis"``) trades ``F_i (w_i - w_hat_i)**2 + lam * bits`` per weight with
``lam = lam_scale * step_t**2`` (step_t the quantizer's own step; ``config.DEFAULT_LAM_SCALE``) and
the per-weight Fisher F_i normalised to mean 1 within the tensor, when given.

What the tuner measures is what a file holds: :func:`apply_plan` and :func:`tune_to_budget` encode
through the same path as ``nnpress.compress`` (``nnpress.encode``) and take sizes from the writer,
so the bits/param of a point is the size of the file that ``nnpress.compress(model, path,
result.config, importance=..., hessians=..., row_hessians=...)`` writes, header and exact tensors
included, and the metric is computed on exactly the values that file decodes to.

Tensors the output does not use (e.g. the pooler of a mean-pooled sentence encoder) have
sensitivity ~0: their step is capped at ``max_step_std`` standard deviations, so they code to
(almost) all zeros and cost almost nothing.

Channel scales (``channel_scales_from_importance``): inside a tensor the same argument per weight
gives ``step_ij ∝ 1/sqrt(F_ij)``. With the rank-1 fit ``F_ij ≈ a_i b_j`` (row factor a: how much the
output channel matters, column factor b: the input feature) that is a per-row times a per-column
scale, ``row_scale_i = (a_i / gm(a))**-0.5`` and ``col_scale_j = (b_j / gm(b))**-0.5`` with gm the
geometric mean: normalised so that the mean log-step — the tensor's rate at high rate — stays that of
its plan step, which keeps its meaning. The scales are snapped to the file's 2**(1/8) grid (int8
exponents) and the factors floored like the importance. ``allocate_steps`` then sets the tensor's
lambda and sensitivity from the weighted distortion per unit step², ``c_t = mean(F_ij s_ij²)``.

Without data, ``sensitivity=None`` gives every tensor the same step, and
:func:`size_sensitivities` the data-free default's rule (steps ~ std * sqrt(size), see
``nnpress.config``; bench/RESULTS.md compares it with one step and with steps ~ std);
:func:`probe_sensitivities` can measure the sensitivities on synthetic inputs when the model can be
run.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .config import (
    DEFAULT_LAM_SCALE,
    HESSIAN_DAMP,
    METHODS,
    ROLES,
    TRELLIS_STEP_RATIO,
    CodecConfig,
    TensorPlan,
    spread_of,
)
from .quant import channel_scale_exps, channel_scales, feedback_factor, feedback_inputs

__all__ = [
    "TuneResult",
    "allocate_steps",
    "apply_plan",
    "channel_scales_from_importance",
    "default_step",
    "probe_sensitivities",
    "quantizable",
    "sensitivities_from_fisher",
    "size_sensitivities",
    "smooth_importance",
    "tune_to_budget",
]


def _lam_scale(method: str, lam_scale, lam_factor, stacklevel: int = 3) -> float:
    """``lam_scale`` (lam / step**2, step the quantizer's), its default for ``method``, or the
    deprecated ``lam_factor`` (lam / D**2 with D the plain-quantizer step, i.e. before the trellis
    halves it) converted. ValueError for an unknown method."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    if lam_factor is not None:
        if lam_scale is not None:
            raise TypeError("give lam_scale only (lam_factor is its deprecated form)")
        warnings.warn(
            "lam_factor is deprecated; use lam_scale (lam = lam_scale * step**2 with the quantizer's "
            "step: lam_scale = lam_factor / TRELLIS_STEP_RATIO**2 for the trellis)",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        ratio = TRELLIS_STEP_RATIO if method == "trellis" else 1.0
        return float(lam_factor) / (ratio * ratio)
    return DEFAULT_LAM_SCALE[method] if lam_scale is None else float(lam_scale)


def quantizable(name: str, w: np.ndarray) -> bool:
    """Tensors that are quantized by default: floating point with at least 2 dimensions (weights
    of linear/conv layers and embeddings). 1-D tensors (biases, normalisation) stay exact."""
    return np.asarray(w).ndim >= 2 and np.issubdtype(np.asarray(w).dtype, np.floating)


def default_step(weights: Mapping[str, np.ndarray], names=None, rel: float = 2.0**-5) -> float:
    """One global step for all quantized tensors: ``rel`` times the RMS of all of them together
    (``tune_to_budget`` searches ``rel`` in 2**-12 .. 1; ``bench_rd.py`` sweeps 0.02 .. 0.32)."""
    names = [n for n, w in weights.items() if quantizable(n, w)] if names is None else list(names)
    if not names:
        return 1.0
    ss = sum(float(np.square(np.asarray(weights[n], np.float64)).sum()) for n in names)
    cnt = sum(np.asarray(weights[n]).size for n in names)
    rms = math.sqrt(ss / max(cnt, 1))
    return rms * rel if rms > 0 else 1.0


def size_sensitivities(weights: Mapping[str, np.ndarray], names=None) -> dict[str, float]:
    """Data-free per-tensor sensitivities ``s_t = 1 / (n_t * spread_t**2)``: every tensor adds the same
    output distortion at the same step relative to its spread, whatever its size n_t, so per weight
    it matters in inverse proportion to its size. :func:`allocate_steps` then gives steps
    proportional to ``spread_t * sqrt(n_t)``, the rule of ``CodecConfig``'s default (``spread``: the
    bulk's, ``config.spread_of``; up to the global knob and the clipping). Tensors with spread 0 get
    0 (their step is capped by ``max_step_std``)."""
    names = [n for n, w in weights.items() if quantizable(n, w)] if names is None else list(names)
    out = {}
    for n in names:
        w = np.asarray(weights[n])
        var = spread_of(w) ** 2 if w.size else 0.0
        out[n] = 1.0 / (w.size * var) if var > 0 else 0.0
    return out


def sensitivities_from_fisher(fisher: Mapping[str, object]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per-tensor mean Fisher (the s_t of the allocation) and per-weight importance normalised to
    mean 1 within each tensor (the F_i of the RD quantizers), from ``fisher_diagonal`` output."""
    sens, imp = {}, {}
    for name, f in fisher.items():
        a = f.detach().cpu().numpy() if hasattr(f, "detach") else np.asarray(f)
        a = np.asarray(a, np.float64)
        m = float(a.mean()) if a.size else 0.0
        sens[name] = m
        if m > 0:
            imp[name] = (a / m).astype(np.float32)
    return sens, imp


def channel_scales_from_importance(
    importance: Mapping[str, np.ndarray],
    *,
    floor: float = 0.1,
    rows: bool = True,
    cols: bool = True,
    uniform_rows: tuple[str, ...] = ("embed",),
    max_octaves: float = 8.0,
    min_gain: float = 2.0,
    strength: float = 0.3,
) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """Per-row and per-column step scale exponents (int8, scale ``2**(e/8)``) of each tensor of rank
    >= 2 from its per-weight importance (raw Fisher or :func:`smooth_importance`; any positive
    scale): row factor a_i = mean of row i, column factor b_j = mean of column j (columns: the
    flattened trailing dimensions), each relative to its mean and floored at ``floor``;
    ``scale = (factor / geometric_mean(factor))**-strength``, limited to ``max_octaves`` octaves either
    way and snapped to the 2**(1/8) grid. ``strength`` 0.5 is the high-rate optimum for exact
    factors; the default 0.3 shrinks toward uniform steps because the factors are estimates from
    a few calibration batches and the rate is not high (bench/RESULTS.md, "Channel scales", for
    how it was chosen). Tensors whose name
    contains one of ``uniform_rows`` get no row scales (as in :func:`smooth_importance`: which
    embedding rows matter depends on the text).
    A vector is kept only when it pays for itself: at high rate, scales from factor f save
    ``n/2 * log2(mean(f) / geometric_mean(f))`` bits on the tensor's n weights at equal weighted
    distortion, and cost 8 bits per exponent in the file; vectors whose predicted saving is below
    ``min_gain`` times their cost are dropped (small tensors, flat factors).
    Returns ``{name: (row_exp or None, col_exp or None)}``; a tensor with no positive importance gets
    ``(None, None)``."""
    if not (math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be finite and > 0, got {floor!r}")
    out = {}
    for name, a in importance.items():
        a = np.asarray(a, np.float64)
        if a.ndim < 2 or a.size == 0:
            continue
        a2 = a.reshape(a.shape[0], -1)

        def exps(f, n_weights=a2.size):
            m = float(f.mean())
            if not (m > 0 and math.isfinite(m)):
                return None
            f = np.maximum(f / m, floor)
            mean_log = float(np.mean(np.log2(f)))
            saving = 0.5 * n_weights * (math.log2(float(np.mean(f))) - mean_log)
            if saving < min_gain * 8 * f.size:
                return None
            log_s = -float(strength) * (np.log2(f) - mean_log)
            log_s = np.clip(log_s, -max_octaves, max_octaves)
            return channel_scale_exps(np.exp2(log_s)).astype(np.int8)

        r = exps(a2.mean(1)) if rows and not any(u in name for u in uniform_rows) else None
        c = exps(a2.mean(0)) if cols else None
        out[name] = (r, c)
    return out


def _scale_grid(shape, row_exp, col_exp) -> np.ndarray:
    """s_ij (float64, shape rows x cols) of the exponents (1 where absent)."""
    r = np.ones(shape[0]) if row_exp is None else channel_scales(np.asarray(row_exp, np.int8))
    c = np.ones(int(np.prod(shape[1:]))) if col_exp is None else channel_scales(np.asarray(col_exp, np.int8))
    return np.outer(r, c)


def allocate_steps(
    weights: Mapping[str, np.ndarray],
    step: float,
    sensitivity: Mapping[str, float] | None = None,
    *,
    method: str = "trellis",
    lam_scale: float | None = None,
    max_ratio: float = 64.0,
    max_step_std: float = 8.0,
    names=None,
    channel_scales: Mapping[str, tuple] | None = None,
    importance: Mapping[str, np.ndarray] | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
    hessian_damp: float = HESSIAN_DAMP,
    hessian_exponent: float = 0.5,
    lam_factor: float | None = None,
) -> dict[str, TensorPlan]:
    """One :class:`nnpress.TensorPlan` (step, method, lam) per quantized tensor from the global
    knob ``step``; hand the result to ``CodecConfig(plan=plan)`` or :func:`apply_plan`.

    ``sensitivity``: per-tensor s_t (None: all equal, i.e. one global step). Steps differ from
    ``step`` by at most ``max_ratio`` either way, except that a tensor's step may grow to
    ``max_step_std`` times its standard deviation when the output barely depends on it.

    ``channel_scales``: ``{name: (row_exp, col_exp)}`` from :func:`channel_scales_from_importance`,
    stored in the plans. For such a tensor the distortion per unit step² is
    ``c_t = mean(F_ij s_ij²)`` (F: ``importance``, mean 1, or 1) instead of 1: s_t becomes
    ``s_t c_t`` in the allocation and lam is ``lam_scale * step_t² * c_t``, so that the RD trade-off
    per weight is the one it would be at its own step.

    ``lam_scale``: lam / step_t² (step_t the quantizer's step); default ``DEFAULT_LAM_SCALE[method]``.
    ``lam_factor`` is its deprecated form (relative to the step before the trellis halves it).

    ``hessians``: ``{name: H}`` column blocks for error feedback (:func:`apply_plan`,
    ``nnpress.compress(hessians=)``, same ``hessian_damp``). Feedback lowers a tensor's distortion
    per unit step² to ``e_t = mean_j 1 / U_jj²`` (U: :func:`nnpress.quant.feedback_factor` of
    H / mean(diag H), damped; the damping alone raises it by 1 + damp): s_t becomes
    ``s_t c_t e_t**hessian_exponent`` and lam ``lam_scale * step_t² * c_t * e_t``. The exponent 0.5
    (not the high-rate 1; bench/RESULTS.md, "Error feedback"): e_t comes from the calibration data
    and overstates the gain on other inputs.
    """
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"step must be finite and > 0, got {step!r}")
    lam_scale = _lam_scale(method, lam_scale, lam_factor)
    names = [n for n, w in weights.items() if quantizable(n, w)] if names is None else list(names)
    coef = {}  # c_t of tensors with channel scales
    for n in names:
        sc = (channel_scales or {}).get(n)
        if sc is None or (sc[0] is None and sc[1] is None):
            continue
        shape = np.shape(weights[n])
        s2 = np.square(_scale_grid(shape, sc[0], sc[1]))
        f = importance.get(n) if importance is not None else None
        f2 = np.ones_like(s2) if f is None else np.asarray(f, np.float64).reshape(s2.shape)
        coef[n] = float(np.mean(f2 * s2) / max(float(np.mean(f2)), 1e-300))
    if not (isinstance(hessian_exponent, (int, float)) and math.isfinite(hessian_exponent) and hessian_exponent >= 0):
        raise ValueError(f"hessian_exponent must be finite and >= 0, got {hessian_exponent!r}")
    fb_eff = {}  # e_t of tensors with error feedback
    for n in names:
        h = (hessians or {}).get(n)
        if h is not None:
            shape = np.shape(weights[n])
            cols = int(np.prod(shape[1:])) if len(shape) >= 2 else int(np.prod(shape))
            _, h, _ = feedback_inputs(shape, None, h)
            u = feedback_factor(h, cols, damp=hessian_damp)
            fb_eff[n] = float(np.mean(1.0 / np.square(np.diag(u))))

    def alloc_coef(n):  # the sensitivity factor of the allocation: c_t e_t**hessian_exponent
        return coef.get(n, 1.0) * fb_eff.get(n, 1.0) ** hessian_exponent

    ref = 1.0
    if sensitivity is not None:
        pos = [sensitivity[n] * alloc_coef(n) for n in names if sensitivity.get(n, 0.0) > 0]
        ref = math.exp(float(np.mean(np.log(pos)))) if pos else 1.0
    plan = {}
    for n in names:
        w = np.asarray(weights[n])
        d = float(step)
        if sensitivity is not None:
            s = float(sensitivity[n]) * alloc_coef(n) if n in sensitivity else ref  # ref has the coefficients
            d = step * math.sqrt(ref / s) if s > 0 else math.inf
            d = max(d, step / max_ratio)
            if d > step * max_ratio:  # barely used: may grow further, to max_step_std deviations
                cap = max_step_std * float(np.std(w)) if w.size else 0.0
                d = min(d, max(step * max_ratio, cap))
        q_step = d * (TRELLIS_STEP_RATIO if method == "trellis" else 1.0)
        lam = lam_scale * q_step * q_step * coef.get(n, 1.0) * fb_eff.get(n, 1.0) if method != "nearest" else 0.0
        sc = (channel_scales or {}).get(n)
        plan[n] = TensorPlan(
            step=q_step,
            method=method,
            lam=lam,
            row_scale_exp=None if sc is None or sc[0] is None else tuple(int(x) for x in sc[0]),
            col_scale_exp=None if sc is None or sc[1] is None else tuple(int(x) for x in sc[1]),
        )
    return plan


def smooth_importance(
    importance: Mapping[str, np.ndarray],
    *,
    floor: float = 0.1,
    factorize: bool = True,
    uniform_rows: tuple[str, ...] = ("embed",),
) -> dict[str, np.ndarray]:
    """Per-weight importance for the RD quantizers from per-weight Fisher normalised to mean 1.

    Raw per-weight Fisher from a few calibration batches is noisy, so by default it is replaced by
    its rank-1 row x column fit (row means times column means: how much each output channel and
    each input feature matter), which generalises beyond the calibration data (bench/RESULTS.md,
    "Rate–distortion", compares the two on held-out sentences).
    Tensors whose name contains one of ``uniform_rows`` (embedding tables: a row is a token, and
    which tokens matter depends on the text) keep only the column factor. Values are floored at
    ``floor`` so that no weight is thrown away just because the calibration data never used it.
    """
    out = {}
    for name, a in importance.items():
        a = np.asarray(a, np.float64)
        if a.ndim >= 2 and factorize:
            a2 = a.reshape(a.shape[0], -1)
            r, c = a2.mean(1), a2.mean(0)
            if any(u in name for u in uniform_rows):
                r = np.ones_like(r)
            fit = np.outer(r, c)
            m = fit.mean()
            a = (fit / m).reshape(a.shape) if m > 0 else np.ones_like(a)
        out[name] = np.maximum(a, floor).astype(np.float32)
    return out


def _search_config(plan: Mapping[str, TensorPlan], hessian_damp: float) -> CodecConfig:
    """The config that encodes exactly the planned tensors (everything else exact)."""
    return CodecConfig(
        plan={n: p if p.lossless is not None else replace(p, lossless=False) for n, p in plan.items()},
        lossless_roles=ROLES,
        hessian_damp=hessian_damp,
    )


def _encode(weights: Mapping[str, np.ndarray], config: CodecConfig, importance, hessians, row_hessians):
    """``({name: EncodedTensor}, file bytes)``: the planned tensors through the one encode path
    (``nnpress.encode``) and the size of the file ``compress`` writes with this config."""
    from .encode import encode_model, file_metadata, write_records
    from .traverse import collect

    unknown = config.unmatched_plan_keys(weights)
    if unknown:
        raise KeyError(f"plan names tensors that are not in the weights: {unknown[:5]}")
    encoded = encode_model(
        collect(dict(weights)), config, importance=importance, hessians=hessians, row_hessians=row_hessians
    )
    data = write_records(encoded, config, file_metadata(config))
    return {t.record.name: t for t in encoded}, len(data)


def _decoded(by_name: Mapping, name: str):
    """The EncodedTensor whose values ``name`` decodes to (an alias: its target's)."""
    t = by_name[name]
    return by_name[t.record.alias_of] if t.record.storage == "alias" else t


def _decoded_values(by_name: Mapping, weights: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """What the file decodes ``name`` to: the quantized reconstruction, else the exact weights."""
    t = _decoded(by_name, name)
    return t.recon if t.record.storage == "quantized" else np.asarray(weights[name])


def apply_plan(
    weights: Mapping[str, np.ndarray],
    plan: Mapping[str, TensorPlan],
    importance: Mapping[str, np.ndarray] | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
    hessian_damp: float = HESSIAN_DAMP,
    row_hessians: Mapping[str, np.ndarray] | None = None,
):
    """Encode every planned tensor as ``nnpress.compress`` would (the one encode path: same row
    blocks, level parameters and reconstruction; ``importance`` per weight where given; error
    feedback where ``hessians`` has a column block and/or ``row_hessians`` a row block). Returns
    ``(levels, reconstruction, bits)`` per planned tensor: int32 levels, the float32 values the file
    decodes to, and the bits the writer stored for it (its chunks plus its channel scale
    exponents). A planned tensor that the encode path keeps exact (NaN/inf, an outlier beyond the
    level range) has no levels and its exact values. Unplanned tensors are not touched."""
    by_name, _ = _encode(weights, _search_config(plan, hessian_damp), importance, hessians, row_hessians)
    levels, recon, bits = {}, {}, {}
    for n in plan:
        t = _decoded(by_name, n)
        r = t.record
        if r.storage == "quantized":
            levels[n] = r.data
        recon[n] = _decoded_values(by_name, weights, n)
        scales = sum(0 if e is None else np.size(e) for e in (r.row_scale_exp, r.col_scale_exp))  # raw: none
        bits[n] = 8.0 * (t.report.stored_bytes + scales) if t is by_name[n] else 0.0  # an alias stores nothing
    return levels, recon, bits


@dataclass
class TuneResult:
    """Outcome of :func:`tune_to_budget`: the chosen knob and plan, and every point evaluated.
    ``config`` is the :class:`~nnpress.CodecConfig` the search encoded with: ``nnpress.compress(
    model, path, result.config, importance=..., hessians=..., row_hessians=...)`` with the same
    inputs writes a file of exactly ``bits_per_param`` that decodes to the state ``metric`` was
    measured on."""

    step: float
    plan: dict[str, TensorPlan]
    metric: float
    bits_per_param: float
    rows: list[dict] = field(default_factory=list)
    met_budget: bool = True
    config: CodecConfig | None = None

    def table(self) -> str:
        lines = [f"{'step':>12} {'bits/param':>11} {'metric':>10} {'meets':>6} {'seconds':>8}"]
        for r in self.rows:
            lines.append(
                f"{r['step']:12.4g} {r['bits_per_param']:11.4f} {r['metric']:10.5f} "
                f"{'yes' if r['ok'] else 'no':>6} {r['seconds']:8.2f}"
            )
        return "\n".join(lines)


def tune_to_budget(
    weights: Mapping[str, np.ndarray],
    evaluate: Callable[[dict[str, np.ndarray]], float],
    budget: float,
    *,
    sensitivity: Mapping[str, float] | None = None,
    importance: Mapping[str, np.ndarray] | None = None,
    method: str = "trellis",
    lam_scale: float | None = None,
    step_range: tuple[float, float] | None = None,
    iterations: int = 10,
    higher_is_better: bool = True,
    progress: Callable[[dict], None] | None = None,
    channel_scales: bool = False,
    hessians: Mapping[str, np.ndarray] | None = None,
    hessian_damp: float = HESSIAN_DAMP,
    row_hessians: Mapping[str, np.ndarray] | None = None,
    lam_factor: float | None = None,
) -> TuneResult:
    """Smallest plan whose decoded model meets ``budget``.

    ``evaluate(state)`` gets the full state (planned tensors as the file decodes them, the rest
    exact) and returns the fidelity metric (accuracy, mean cosine, ...); the budget is a minimum (or
    a maximum with ``higher_is_better=False``). Bisects the global step on a log scale over
    ``step_range`` (default: 2**-12 .. 2**0 times the weights' RMS), assuming the metric degrades
    as the step grows; every evaluated point is kept in ``result.rows`` (``result.table()`` prints
    them). Each point is a whole encode through the one encode path; its bits/param is the size of
    the file (header and exact tensors included) over all parameters of ``weights``.
    ``channel_scales=True``: per-row/per-column step scales from ``importance``
    (:func:`channel_scales_from_importance`; needs ``importance``), stored in the plan.
    ``hessians`` / ``row_hessians``: blocks for error feedback (:func:`allocate_steps`,
    :func:`apply_plan`); compress the result with ``nnpress.compress(..., result.config,
    hessians=..., row_hessians=...)``. ``lam_scale``: as :func:`allocate_steps` (``lam_factor`` is
    its deprecated form).
    """
    scales = None
    if channel_scales:
        if importance is None:
            raise ValueError("channel_scales=True needs the per-weight importance")
        scales = channel_scales_from_importance({n: importance[n] for n in importance if n in weights})
    lam_scale = _lam_scale(method, lam_scale, lam_factor)
    names = [n for n, w in weights.items() if quantizable(n, w)]
    n_params = sum(np.asarray(w).size for w in weights.values())
    base = default_step(weights, names, rel=1.0)
    lo, hi = step_range if step_range is not None else (base * 2.0**-12, base)
    rows: list[dict] = []

    def ok(metric: float) -> bool:
        return metric >= budget if higher_is_better else metric <= budget

    def point(step: float):
        t0 = time.perf_counter()
        plan = allocate_steps(
            weights,
            step,
            sensitivity,
            method=method,
            lam_scale=lam_scale,
            names=names,
            channel_scales=scales,
            importance=importance,
            hessians=hessians,
            hessian_damp=hessian_damp,
        )
        by_name, nbytes = _encode(weights, _search_config(plan, hessian_damp), importance, hessians, row_hessians)
        state = {n: _decoded_values(by_name, weights, n) for n in weights}
        metric = float(evaluate(state))
        row = {
            "step": step,
            "bits_per_param": 8.0 * nbytes / max(n_params, 1),
            "metric": metric,
            "ok": ok(metric),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        if progress is not None:
            progress(row)
        return plan, row

    best = None
    plan_lo, row_lo = point(lo)
    if row_lo["ok"]:
        best = (lo, plan_lo, row_lo)
        plan_hi, row_hi = point(hi)
        if row_hi["ok"]:
            best = (hi, plan_hi, row_hi)
        else:
            a, b = math.log(lo), math.log(hi)
            for _ in range(iterations):
                mid = math.exp(0.5 * (a + b))
                plan_m, row_m = point(mid)
                if row_m["ok"]:
                    a = math.log(mid)
                    if best is None or row_m["bits_per_param"] < best[2]["bits_per_param"]:
                        best = (mid, plan_m, row_m)
                else:
                    b = math.log(mid)
    if best is None:  # even the finest step misses the budget: return it, flagged
        plan, row = plan_lo, row_lo
        return TuneResult(
            step=lo,
            plan=plan,
            metric=row["metric"],
            bits_per_param=row["bits_per_param"],
            rows=rows,
            met_budget=False,
            config=_search_config(plan, hessian_damp),
        )
    step, plan, row = best
    return TuneResult(
        step=step,
        plan=plan,
        metric=row["metric"],
        bits_per_param=row["bits_per_param"],
        rows=rows,
        config=_search_config(plan, hessian_damp),
    )


def probe_sensitivities(
    model, inputs, names=None, *, rel_noise: float = 0.02, n_probes: int = 2, output_fn=None, seed: int = 0
) -> dict[str, float]:
    """Per-weight output sensitivity s_t of each tensor, by perturbing one tensor at a time with
    small Gaussian noise on ``inputs`` (real calibration data or synthetic inputs) — the data-free
    route when no labels or Fisher are at hand. Wraps :func:`nnpress.fisher.probe_sensitivity`
    and divides by the injected noise power so that the result is per weight and per unit noise
    variance, comparable across tensors."""
    from .fisher.probe import _noise_scale, probe_sensitivity  # torch, lazily

    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if p.dim() >= 2] if names is None else list(names)
    raw = probe_sensitivity(
        model, inputs, names, rel_noise=rel_noise, n_probes=n_probes, output_fn=output_fn, seed=seed
    )
    out = {}
    for n, v in raw.items():
        p = params[n].detach()
        var = (rel_noise * _noise_scale(p)) ** 2
        out[n] = float(v) / (var * p.numel()) if var > 0 else 0.0
    return out


def __getattr__(name: str):
    if name == "DEFAULT_LAM_FACTOR":  # deprecated: lam / D**2 with D the plain step (lam_scale is lam / step**2)
        warnings.warn(
            "tune.DEFAULT_LAM_FACTOR is deprecated; use nnpress.config.DEFAULT_LAM_SCALE",
            DeprecationWarning,
            stacklevel=2,
        )
        return {m: s * (TRELLIS_STEP_RATIO**2 if m == "trellis" else 1.0) for m, s in DEFAULT_LAM_SCALE.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
