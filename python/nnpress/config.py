"""``CodecConfig``: every choice ``nnpress.compress`` makes, in one object (numpy only).

Step size of a quantized tensor, first match wins:
  1. the tensor's entry in the per-tensor plan (``plan[name]``, or the first glob pattern that
     matches, in order) with ``step`` (absolute), ``qp`` or ``rel_step`` (times the tensor's
     spread, ``CodecConfig.spread``);
  2. ``CodecConfig.step`` (one absolute step for all tensors);
  3. ``CodecConfig.qp`` (NNCodec's integer knob: ``step = 2 ** (qp / 4)``);
  4. ``CodecConfig.rel_step * spread(tensor) * (n / n_mean) ** (size_exponent / 2)``, the default
     quality knob: n is the tensor's element count and n_mean the mean count of the tensors
     ``compress`` quantizes by these rules (the factor is clipped to [1/8, 8]; ``size_exponent=0``
     gives plain ``rel_step * spread``; a constant tensor uses max|w| for its spread, an all-zero
     one step 1). The spread is ``spread_of(tensor, CodecConfig.spread)``: by default "robust",
     the RMS deviation after clipping deviations beyond ``ROBUST_CLIP`` robust sigmas (from the
     MAD), which is about the std of a tensor without outliers and the spread of the bulk of a
     tensor whose std a handful of outliers set; "std" is the plain standard deviation. With
     method "trellis" this step is halved (``TRELLIS_STEP_RATIO``: its two interleaved
     quantizers have a grid of 2 * step), so that ``rel_step`` means about the same file size
     for every method. A plan entry's ``rel_step`` (rule 1) multiplies the same spread.
``lam`` (the rate-distortion trade-off handed to the quantizer) is ``lam_scale * step**2`` unless
the plan gives ``lam`` directly. Tensors whose role is in ``lossless_roles`` (and every non-float
tensor) are stored exactly; a plan entry may force ``lossless=True/False`` for one tensor.

Fine roles: a quantized tensor whose role is in ``fine_roles`` (biases and normalisation
parameters by default) and whose plan entry names no step, qp, rel_step or method is quantized
near-losslessly instead of by rules 2-4: method "nearest", step ``fine_rel_step * spread(tensor)``
(no size factor; never coarser than an absolute ``CodecConfig.step``/``qp``), lam 0, and it does
not count in the model's mean or total size (``quantizes``). It applies to roles that are not in
``lossless_roles``: by default (``lossless_roles=("buffer", "other")``) biases and norms are
quantized this way; ``lossless_roles=("bias", "norm", "buffer", "other")`` stores them exactly
(the default before). A constant tensor (every element the same finite c, e.g. a norm weight of
ones or a bias of zeros) gets step |c| instead (1 for zeros), unless its plan gives channel scales:
every level is 1, -1 or 0, which decodes to c exactly and codes in a few bytes whatever its size.
Like pruning, ``CodecConfig(channel_scales=True)`` derives no channel scales for fine-role tensors.

Outliers and the level range: the quantizers need |w / step| < ``MAX_LEVEL``; a tensor with a
value beyond it (an outlier more than ~10**7 bulk spreads from the median at the default knob) is
stored exactly by ``compress`` (``nnpress.encode``). Below that, outliers get exact levels, coded
with more bits than the bulk's.

A tuner passes its plan as ``plan={name: TensorPlan(step=..., method=..., lam=...)}``.

This module owns the codec's defaults and step rules: ``METHODS``, ``ROLES``, ``DEFAULT_REL_STEP``,
``TRELLIS_STEP_RATIO``, ``DEFAULT_LAM_SCALE``, ``HESSIAN_DAMP``, ``DEFAULT_BLOCK_ELEMENTS``,
``SIZE_TOLERANCE``, ``SPREADS``, ``ROBUST_CLIP``, ``PROBE_FACTOR_LIMIT`` and ``FEEDBACK_STEP_RATIO``
are defined here and nowhere else.

One name per idea: the per-tensor plan is ``plan`` (``CodecConfig.plan``, ``--plan``,
``TuneResult.plan``); ``lam`` is the absolute trade-off and ``lam_scale`` the one relative to
step**2; the error-feedback blocks are ``hessians``/``row_hessians`` (one per tensor: ``hessian``/
``row_hessian``), damped by ``hessian_damp``. ``CodecConfig(overrides=)`` is the deprecated name of
``plan``.

The data-free default (``nnpress compress model.safetensors``: no calibration data, no tuning):
rule 4 with ``rel_step = DEFAULT_REL_STEP``, ``spread = "robust"`` and ``size_exponent = 1``,
``method = "auto"``, which is "trellis" (dependent quantization) at every model size unless
``auto_trellis_max`` caps it (a model whose quantized tensors hold more weights in all then gets
"nearest", faster), and biases and norms quantized near-losslessly (fine roles). Why steps grow
with sqrt(size): quantization noise in a layer's output, relative to the output, is about
step**2 / (12 * std**2) whatever the layer's size, so at equal relative step every tensor adds about
the same distortion to the model's output while its bits grow with its size; minimising distortion
+ mu * bits then gives step ~ std * sqrt(n) (bench/RESULTS.md, "Data-free default", measures it on
all-MiniLM-L6-v2 and the digits CNN/MLP against NNCodec's defaults).

Probe: with ``CodecConfig(probe=True)`` (off by default), when ``compress`` is given an
``nn.Module`` that runs on synthetic inputs, each rule-4 tensor's output sensitivity s_t per weight is measured by a
data-free probe (``tune.probe_sensitivities``: the mean squared change of the whole output when
that tensor alone gets small Gaussian noise) and its rule-4 step a_t becomes
``m_t * a_t`` with ``m_t = c / (sqrt(s_t) * a_t)`` clipped to [1/4, 4] (``PROBE_FACTOR_LIMIT``;
s_t = 0: 4), the steps that minimise the predicted output distortion sum s_t n_t step_t**2 for the
bits, scaled by c so that the predicted distortion equals rule 4's: ``rel_step`` keeps meaning the
same output error, and the probe spends the bits where they buy more. A state_dict, a
``.safetensors`` or a ``.pt`` file has no module to run: rule 4 alone (``encode.probe_factors``).

Synthetic feedback (opt-in): with ``CodecConfig(synthetic_feedback=True)``, when ``compress``
is given a text model (an ``nn.Module`` that runs on synthetic token ids, or a Hugging Face model
folder that loads and runs) and no importance or hessians of its own, the rule-4 ``nn.Linear``
and ``nn.Embedding`` weights get K-FAC column blocks estimated on synthetic inputs
(``nnpress.synthetic``: random token ids; no user data; models fed vectors or images get none) and
are quantized with error feedback on them; the rule-4 steps of those Linear weights are
multiplied by ``FEEDBACK_STEP_RATIO``, because feedback cancels part of the output error that a
step causes, so that ``rel_step`` keeps meaning about the same output error with and without it
(chosen on tune inputs, bench/RESULTS.md "Data-free default"). Embedding tables keep rule 4's
step: an input's error from a table is the error of the rows of its own tokens, which feedback
inside a row does not average away, and the least faithful inputs are those whose rare tokens
got the worst rows. A state_dict, a ``.safetensors`` or a ``.pt`` file
has no module to run, and a model that does not run on synthetic inputs gives none: rule 4 alone,
as before. The file records ``"synthetic_feedback": true`` in its metadata when blocks were used;
the decoder needs nothing new. It is off by default because of its encode time: the block
estimate and the feedback trellis cost several times the default's encode, more than NNCodec's
whole encode, for a somewhat smaller file (bench/RESULTS.md, "Data-free default"), and the
default's encode is meant to stay well under NNCodec's.

Channel scales: a plan may carry int8 step exponents per row and/or column
(``TensorPlan(row_scale_exp=..., col_scale_exp=...)``, scale ``2**(e/8)``; weight (i, j) then uses
``(step * row_scale[i]) * col_scale[j]``). With ``CodecConfig(channel_scales=True)`` ``compress``
derives them from the per-weight ``importance`` it is given (``tune.channel_scales_from_importance``)
for the tensors rules 1-4 quantize whose plan has none (not the fine roles).
"""

from __future__ import annotations

import fnmatch
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

__all__ = [
    "CONFIG_METHODS",
    "DEFAULT_BLOCK_ELEMENTS",
    "DEFAULT_LAM_SCALE",
    "DEFAULT_REL_STEP",
    "FEEDBACK_STEP_RATIO",
    "FLOAT_DTYPES",
    "HESSIAN_DAMP",
    "MAX_LEVEL",
    "METHODS",
    "PROBE_FACTOR_LIMIT",
    "ROBUST_CLIP",
    "ROLES",
    "SIZE_TOLERANCE",
    "SPREADS",
    "TRELLIS_STEP_RATIO",
    "CodecConfig",
    "ResolvedPlan",
    "TensorPlan",
    "qp_step",
    "spread_of",
]

METHODS = ("nearest", "rdoq", "trellis")
CONFIG_METHODS = METHODS + ("auto",)  # CodecConfig.method may also be "auto" (module docstring)
ROLES = ("weight", "bias", "norm", "embedding", "buffer", "other")
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
# Dependent quantization has two interleaved quantizers of spacing 2 * step, so at the same
# distortion its step is about half the plain quantizer's: rule 4 halves it, and so does
# tune.allocate_steps, so that a step knob means about the same size for every method.
TRELLIS_STEP_RATIO = 0.5
SIZE_FACTOR_LIMIT = 8.0  # rule 4's size factor stays within [1/8, 8]
PROBE_FACTOR_LIMIT = 4.0  # the probe moves a rule-4 step by at most this factor either way
# rule-4 steps of Linear weights quantized with synthetic-input error feedback are this much
# coarser (module docstring, "Synthetic feedback"; chosen on tune inputs, bench/RESULTS.md)
FEEDBACK_STEP_RATIO = 1.375
# rule 4's default quality knob (CodecConfig.rel_step), chosen with the trellis at every size
# (bench/RESULTS.md, "Data-free default": chosen on tune inputs, reported on others)
DEFAULT_REL_STEP = 1.0 / 22
# lam_scale (lam = lam_scale * step**2, step the quantizer's own) that the tuner uses per method:
# the high-rate slope of distortion over rate is ln(2)/6 * D**2 ~= 0.12 D**2 at the plain step D;
# the trellis' half step makes the same lam 0.24 * step**2 for it (bench/RESULTS.md, "Quantizers").
DEFAULT_LAM_SCALE = {"nearest": 0.0, "rdoq": 0.12, "trellis": 0.24}
# Damping of the error-feedback blocks: damp * mean(diag H) is added to H's diagonal
# (bench/RESULTS.md, "Error feedback", for how it was chosen).
HESSIAN_DAMP = 0.3
DEFAULT_BLOCK_ELEMENTS = 1 << 18  # target elements per independently decodable row block
SIZE_TOLERANCE = 0.001  # level params: the fastest-decoding pair within this size fraction
MAX_LEVEL = 2.0**30  # the quantizers' limit on |w / step|
SPREADS = ("robust", "std")  # CodecConfig.spread: the tensor scale of rule 4 (spread_of)
# spread "robust": deviations beyond ROBUST_CLIP robust sigmas (1.4826 * MAD, the std of a Gaussian)
# are clipped before the RMS; large enough that Gaussian and Laplacian tensors keep about their std.
ROBUST_CLIP = 6.0
MAD_TO_SIGMA = 1.4826
ROBUST_SAMPLE = 1 << 16  # "robust" looks at at most this many values (a fixed, evenly spread sample)


def qp_step(qp: int) -> float:
    """NNCodec's integer quality knob as a step: ``2 ** (qp / 4)``."""
    return 2.0 ** (qp / 4.0)


@dataclass(frozen=True)
class TensorPlan:
    """Per-tensor choices; ``None`` fields fall back to the config's."""

    step: float | None = None
    rel_step: float | None = None
    qp: int | None = None
    method: str | None = None
    lam: float | None = None
    lam_scale: float | None = None
    lossless: bool | None = None
    row_scale_exp: tuple | None = None  # int8 exponents per row (scale 2**(e/8)); None = no row scales
    col_scale_exp: tuple | None = None  # int8 exponents per column

    def __post_init__(self):
        for k in ("row_scale_exp", "col_scale_exp"):
            v = getattr(self, k)
            if v is not None:
                object.__setattr__(self, k, _exps(v, f"TensorPlan.{k}"))
        for k in ("step", "rel_step"):
            v = getattr(self, k)
            if v is not None and not (_is_real(v) and math.isfinite(v) and v > 0):
                raise ValueError(f"TensorPlan.{k} must be a finite number > 0, got {v!r}")
        for k in ("lam", "lam_scale"):
            v = getattr(self, k)
            if v is not None and not (_is_real(v) and math.isfinite(v) and v >= 0):
                raise ValueError(f"TensorPlan.{k} must be a finite number >= 0, got {v!r}")
        _check_qp(self.qp, "TensorPlan.qp")
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"TensorPlan.method must be one of {METHODS}, got {self.method!r}")
        if self.lossless is not None and not isinstance(self.lossless, bool):
            raise TypeError(f"TensorPlan.lossless must be a bool or None, got {self.lossless!r}")


@dataclass(frozen=True)
class ResolvedPlan:
    """What compress does with one tensor."""

    lossless: bool
    method: str = "nearest"
    step: float = 0.0
    lam: float = 0.0
    row_scale_exp: tuple | None = None
    col_scale_exp: tuple | None = None


def _exps(v, what: str) -> tuple:
    """A sequence of ints in [-128, 127] (channel scale exponents) as a tuple of ints."""
    a = np.asarray(v)
    if a.ndim != 1 or (a.size and (a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer))):
        raise TypeError(f"{what} must be a 1-D sequence of ints, got {type(v).__name__}")
    if a.size and (int(a.min()) < -128 or int(a.max()) > 127):
        raise ValueError(f"{what} values must lie in [-128, 127]")
    return tuple(int(x) for x in a)


def _check_qp(qp, what: str) -> None:
    if qp is not None and (isinstance(qp, bool) or not isinstance(qp, (int, np.integer)) or not -200 <= qp <= 100):
        raise ValueError(f"{what} must be an int in [-200, 100] or None, got {qp!r}")


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass(frozen=True)
class CodecConfig:
    """Configuration of :func:`nnpress.compress` (see the module docstring for the step rules).

    method:         "auto" | "nearest" | "rdoq" | "trellis" — how levels are chosen. "auto" (the
                    default): "trellis", or "nearest" for models with more than
                    ``auto_trellis_max`` quantized weights when that is set. With lam_scale = 0
                    RDOQ gives the nearest levels, slower.
    step, qp, rel_step: the step size (absolute, NNCodec-style qp, or relative to each tensor's
                    spread and size, rule 4 of the module docstring).
    spread:         "robust" | "std": the tensor scale rule 4 multiplies by rel_step
                    (``spread_of``). "robust" (the default) follows the bulk of the weights: a
                    handful of outliers, however large, move it by at most ``ROBUST_CLIP`` robust
                    sigmas each; "std" is the standard deviation (the rule before).
    size_exponent:  how rule 4's step grows with the tensor's size: times
                    ``(n / n_mean) ** (size_exponent / 2)`` (1 = the rate-distortion optimum when
                    every tensor matters equally; 0 = off).
    auto_trellis_max: None (the default: "auto" is the trellis at every size), or the largest
                    total of quantized weights for which "auto" picks the trellis ("nearest"
                    above: faster, larger files at equal fidelity).
    lam_scale:      RDOQ/trellis trade-off, ``lam = lam_scale * step**2`` (0 = distortion only).
    lossless_roles: roles stored exactly (buffer and other by default; add "bias" and "norm" to
                    store those exactly too).
    fine_roles:     roles quantized near-losslessly when they are not in lossless_roles (bias and
                    norm by default): nearest rounding with step ``fine_rel_step * spread`` (at most
                    an absolute ``step``/``qp``; a constant tensor: step |c|, exact), not counted in
                    the model's mean size (module docstring, "Fine roles").
    fine_rel_step:  the fine roles' step relative to their spread (1/256: the rounding error is at
                    most 1/512 of the tensor's spread).
    block_elements: target elements per independently decodable row block of a large tensor.
    threads:        worker threads for quantizing and coding (None = all cores).
    plan:           name or glob pattern -> TensorPlan (or a dict of its fields): per-tensor
                    choices. ``overrides`` is its deprecated name.
    channel_scales: derive per-row/per-column step scales from ``compress(importance=...)`` for
                    the tensors rules 1-4 quantize (not the fine roles) whose plan has none
                    (module docstring; the file becomes format 1.1).
                    ``compress`` refuses it without an importance.
    prune:          fraction in [0, 1) of each quantized tensor's weights set to zero before
                    quantization, smallest saliency first (``importance * w**2`` with
                    ``compress(importance=...)``, else ``w**2``; nnpress.prune); the fine roles
                    are not pruned. 0 = off.
    probe:          when ``compress`` is given an ``nn.Module`` that runs on synthetic inputs
                    (``nnpress.fisher.probe.synthetic_inputs``), multiply each rule-4 step by the
                    data-free probe's factor (module docstring, "Probe"); a state_dict or a file
                    has no module to run, so it gets rule 4 alone.
    synthetic_feedback: (opt-in) when ``compress`` is given a text model (an ``nn.Module`` that runs on
                    synthetic token ids, or a model folder; no importance/hessians), error
                    feedback from K-FAC column blocks
                    estimated on synthetic inputs for its rule-4 Linear and Embedding weights,
                    the Linear ones with steps ``FEEDBACK_STEP_RATIO`` coarser (module docstring,
                    "Synthetic feedback"); a state_dict or a file gets rule 4 alone.
    hessian_damp:   damping of the ``compress(hessians=...)`` blocks for error feedback
                    (``nnpress.quantize(hessian_damp=)``): ``damp * mean(diag H)`` is added to the
                    diagonal (``HESSIAN_DAMP``; more calibration data needs less damping).
    """

    method: str = "auto"
    step: float | None = None
    qp: int | None = None
    rel_step: float = DEFAULT_REL_STEP
    spread: str = "robust"
    size_exponent: float = 1.0
    auto_trellis_max: int | None = None
    lam_scale: float = 0.0
    lossless_roles: tuple = ("buffer", "other")
    fine_roles: tuple = ("bias", "norm")
    fine_rel_step: float = 1.0 / 256
    block_elements: int = DEFAULT_BLOCK_ELEMENTS
    threads: int | None = None
    plan: Mapping[str, Any] = field(default_factory=dict)
    channel_scales: bool = False
    prune: float = 0.0
    probe: bool = False
    synthetic_feedback: bool = False
    hessian_damp: float = HESSIAN_DAMP
    overrides: InitVar[Mapping[str, Any] | None] = None  # deprecated name of ``plan``

    def __post_init__(self, overrides):
        if overrides is not None and overrides is not self.plan:  # (dataclasses.replace passes plan back)
            if self.plan:
                raise TypeError("CodecConfig: give plan= only (overrides= is its deprecated name)")
            warnings.warn(
                "CodecConfig(overrides=...) is deprecated; use CodecConfig(plan=...)", DeprecationWarning, stacklevel=3
            )
            object.__setattr__(self, "plan", overrides)
        if not (_is_real(self.hessian_damp) and math.isfinite(self.hessian_damp) and self.hessian_damp >= 0):
            raise ValueError(f"CodecConfig.hessian_damp must be a finite number >= 0, got {self.hessian_damp!r}")
        if not (_is_real(self.prune) and math.isfinite(self.prune) and 0 <= self.prune < 1):
            raise ValueError(f"CodecConfig.prune must be a number in [0, 1), got {self.prune!r}")
        if not isinstance(self.probe, bool):
            raise TypeError(f"CodecConfig.probe must be a bool, got {self.probe!r}")
        if not isinstance(self.synthetic_feedback, bool):
            raise TypeError(f"CodecConfig.synthetic_feedback must be a bool, got {self.synthetic_feedback!r}")
        if not isinstance(self.channel_scales, bool):
            raise TypeError(f"CodecConfig.channel_scales must be a bool, got {self.channel_scales!r}")
        if self.method not in CONFIG_METHODS:
            raise ValueError(f"CodecConfig.method must be one of {CONFIG_METHODS}, got {self.method!r}")
        if self.spread not in SPREADS:
            raise ValueError(f"CodecConfig.spread must be one of {SPREADS}, got {self.spread!r}")
        if not (_is_real(self.size_exponent) and 0 <= self.size_exponent <= 2):
            raise ValueError(f"CodecConfig.size_exponent must be a number in [0, 2], got {self.size_exponent!r}")
        atm = self.auto_trellis_max
        if atm is not None and (isinstance(atm, bool) or not isinstance(atm, (int, np.integer)) or atm < 0):
            raise ValueError(f"CodecConfig.auto_trellis_max must be None or an int >= 0, got {atm!r}")
        if self.step is not None and not (_is_real(self.step) and math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"CodecConfig.step must be a finite number > 0 or None, got {self.step!r}")
        _check_qp(self.qp, "CodecConfig.qp")
        if self.step is not None and self.qp is not None:
            raise ValueError("CodecConfig: give one of step= and qp= (both name one absolute step)")
        if not (_is_real(self.rel_step) and math.isfinite(self.rel_step) and self.rel_step > 0):
            raise ValueError(f"CodecConfig.rel_step must be a finite number > 0, got {self.rel_step!r}")
        if not (_is_real(self.lam_scale) and math.isfinite(self.lam_scale) and self.lam_scale >= 0):
            raise ValueError(f"CodecConfig.lam_scale must be a finite number >= 0, got {self.lam_scale!r}")
        for k in ("lossless_roles", "fine_roles"):
            v = getattr(self, k)
            roles = (v,) if isinstance(v, str) else tuple(v)
            for r in roles:
                if r not in ROLES:
                    raise ValueError(f"CodecConfig.{k}: unknown role {r!r}; roles are {ROLES}")
            object.__setattr__(self, k, roles)
        if not (_is_real(self.fine_rel_step) and math.isfinite(self.fine_rel_step) and self.fine_rel_step > 0):
            raise ValueError(f"CodecConfig.fine_rel_step must be a finite number > 0, got {self.fine_rel_step!r}")
        if (
            isinstance(self.block_elements, bool)
            or not isinstance(self.block_elements, (int, np.integer))
            or self.block_elements < 1
        ):
            raise ValueError(f"CodecConfig.block_elements must be a positive int, got {self.block_elements!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"CodecConfig.threads must be a positive int or None, got {self.threads!r}")
        if not isinstance(self.plan, Mapping):
            raise TypeError("CodecConfig.plan must be a mapping of name/pattern -> TensorPlan")
        plans = {}
        for k, v in self.plan.items():
            if not isinstance(k, str):
                raise TypeError(f"CodecConfig.plan keys must be str, got {k!r}")
            if isinstance(v, Mapping):
                unknown = sorted(set(v) - {f.name for f in fields(TensorPlan)})
                if unknown:
                    raise TypeError(
                        f"CodecConfig.plan[{k!r}]: unknown field(s) {unknown}; "
                        f"a plan entry takes {sorted(f.name for f in fields(TensorPlan))}"
                    )
                v = TensorPlan(**v)
            if not isinstance(v, TensorPlan):
                raise TypeError(f"CodecConfig.plan[{k!r}] must be a TensorPlan or dict, got {type(v).__name__}")
            plans[k] = v
        object.__setattr__(self, "plan", plans)

    def replace(self, **changes) -> CodecConfig:
        if "overrides" in changes:
            if "plan" in changes:
                raise TypeError("CodecConfig.replace: give plan= only (overrides= is its deprecated name)")
            warnings.warn(
                "CodecConfig.replace(overrides=...) is deprecated; use plan=", DeprecationWarning, stacklevel=2
            )
            changes["plan"] = changes.pop("overrides")
        return replace(self, overrides=None, **changes)

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def plan_for(self, name: str) -> TensorPlan | None:
        """The plan entry for a tensor: its exact name, else the first glob pattern that matches."""
        plan = self.plan.get(name)
        if plan is not None:
            return plan
        for pattern, p in self.plan.items():
            if _is_pattern(pattern) and fnmatch.fnmatchcase(name, pattern):
                return p
        return None

    def unmatched_plan_keys(self, names) -> list[str]:
        """Plan keys (names or patterns) that match none of ``names``: almost always a typo."""
        names = list(names)
        known = set(names)
        out = []
        for key in self.plan:
            if key in known:
                continue
            if _is_pattern(key) and any(fnmatch.fnmatchcase(n, key) for n in names):
                continue
            out.append(key)
        return out

    def quantizes(self, name: str, role: str, dtype: str) -> bool:
        """Whether ``resolve`` quantizes a (finite) tensor of this name, role and dtype by rules
        1-4: the model's quantized weights, whose mean and total size ``compress`` passes to
        ``resolve``. Tensors it quantizes near-losslessly by the fine-role rule are not counted."""
        o = self.plan_for(name)
        lossless = role in self.lossless_roles if o is None or o.lossless is None else o.lossless
        return dtype in FLOAT_DTYPES and not lossless and not self._fine(role, o)

    def by_rule4(self, name: str, role: str, dtype: str) -> bool:
        """Whether a (finite) tensor's step comes from rule 4 (quantized, not fine, no plan step or
        qp or rel_step, no absolute config step): the tensors the probe's factors and the synthetic
        feedback's ``FEEDBACK_STEP_RATIO`` apply to."""
        o = self.plan_for(name)
        if not self.quantizes(name, role, dtype) or self.step is not None or self.qp is not None:
            return False
        return o is None or (o.step is None and o.qp is None and o.rel_step is None)

    def _fine(self, role: str, o: TensorPlan | None) -> bool:
        """Whether the fine-role rule sets this tensor's step: its role is a fine one and its plan
        entry (if any) names neither a step nor a method."""
        if role not in self.fine_roles:
            return False
        return o is None or (o.step is None and o.qp is None and o.rel_step is None and o.method is None)

    def model_method(self, total_size: int | None) -> str:
        """The method for tensors without a planned one: ``method``, or for "auto" "trellis",
        unless ``auto_trellis_max`` is set and the quantized tensors hold more weights in all (or
        their total is unknown, None): then "nearest"."""
        if self.method != "auto":
            return self.method
        if self.auto_trellis_max is None:
            return "trellis"
        small = total_size is not None and total_size <= self.auto_trellis_max
        return "trellis" if small else "nearest"

    def resolve(
        self,
        name: str,
        role: str,
        dtype: str,
        values: np.ndarray | None,
        *,
        mean_size: float | None = None,
        total_size: int | None = None,
        step_factor: float = 1.0,
    ) -> ResolvedPlan:
        """The plan for one tensor; ``values`` (float) is needed only for a relative step.
        ``mean_size`` / ``total_size``: mean and total element count of the tensors the model
        quantizes (``compress`` passes them); None = this tensor alone is the model.
        ``step_factor`` multiplies a rule-4 step (the probe's factor, ``FEEDBACK_STEP_RATIO``;
        other rules ignore it)."""
        o = self.plan_for(name) or TensorPlan()
        lossless = role in self.lossless_roles if o.lossless is None else o.lossless
        if dtype not in FLOAT_DTYPES or lossless:
            return ResolvedPlan(lossless=True)
        n = int(values.size) if values is not None else 0
        if self._fine(role, o):
            step = _rel_step(values, self.fine_rel_step, self.spread)
            absolute = self.step if self.step is not None else None if self.qp is None else qp_step(self.qp)
            if absolute is not None:
                step = min(step, float(absolute))
            c = _constant_value(values) if o.row_scale_exp is None and o.col_scale_exp is None else None
            if c is not None:  # levels all 1 (or all 0): c exactly, in a few bits per tensor
                step = abs(c) if c != 0 else 1.0
            return ResolvedPlan(
                lossless=False,
                method="nearest",
                step=step,
                lam=0.0,
                row_scale_exp=o.row_scale_exp,
                col_scale_exp=o.col_scale_exp,
            )
        method = o.method or self.model_method(n if total_size is None else total_size)
        step = self._step(o, values, method, n, mean_size, step_factor)
        if o.lam is not None:
            lam = float(o.lam)
        else:
            scale = self.lam_scale if o.lam_scale is None else o.lam_scale
            lam = float(scale) * step * step
        return ResolvedPlan(
            lossless=False,
            method=method,
            step=step,
            lam=lam,
            row_scale_exp=o.row_scale_exp,
            col_scale_exp=o.col_scale_exp,
        )

    def _step(self, o: TensorPlan, values, method: str, n: int, mean_size: float | None, factor: float = 1.0) -> float:
        """The step rules of the module docstring, first match wins."""
        if o.step is not None:
            return float(o.step)
        if o.qp is not None:
            return qp_step(o.qp)
        if o.rel_step is not None:
            return _rel_step(values, o.rel_step, self.spread)
        if self.step is not None:
            return float(self.step)
        if self.qp is not None:
            return qp_step(self.qp)
        step = _rel_step(values, self.rel_step, self.spread)
        if self.size_exponent and n and mean_size:
            f = (n / float(mean_size)) ** (0.5 * float(self.size_exponent))
            step *= min(max(f, 1.0 / SIZE_FACTOR_LIMIT), SIZE_FACTOR_LIMIT)
        if method == "trellis":
            step *= TRELLIS_STEP_RATIO
        return step * float(factor)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lossless_roles"] = list(self.lossless_roles)
        d["fine_roles"] = list(self.fine_roles)
        d["plan"] = {k: {f: v for f, v in asdict(p).items() if v is not None} for k, p in self.plan.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CodecConfig:
        d = dict(d)
        if isinstance(d.get("overrides"), int):  # a file's metadata: the plan's size (its entries are in the table)
            del d["overrides"]
        for k in ("lossless_roles", "fine_roles"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def _overrides(self) -> Mapping[str, TensorPlan]:
    warnings.warn("CodecConfig.overrides is deprecated; use CodecConfig.plan", DeprecationWarning, stacklevel=2)
    return self.plan


def _override_for(self, name: str) -> TensorPlan | None:
    warnings.warn("CodecConfig.override_for is deprecated; use CodecConfig.plan_for", DeprecationWarning, stacklevel=2)
    return self.plan_for(name)


# Deprecated read access under the old names (set after the dataclass is built, so that they do
# not become fields or defaults).
CodecConfig.overrides = property(_overrides)
CodecConfig.override_for = _override_for


def _is_pattern(key: str) -> bool:
    return any(c in key for c in "*?[")


def _constant_value(values: np.ndarray | None) -> float | None:
    """The value every element of ``values`` holds (a finite float), or None: empty, not constant,
    or not finite."""
    if values is None or values.size == 0:
        return None
    v = np.asarray(values).reshape(-1)
    c = v[0]
    if not np.isfinite(c) or not np.all(v == c):
        return None
    return float(c)


def _rel_step(values: np.ndarray | None, rel: float, spread: str = "std") -> float:
    """``rel`` times the tensor's spread (``spread_of``); 1 for an empty or all-zero tensor."""
    if values is None or values.size == 0:
        return 1.0
    s = spread_of(values, spread)
    return s * float(rel) if s > 0 else 1.0


def spread_of(values: np.ndarray, spread: str = "robust") -> float:
    """The scale of a tensor that rule 4 multiplies by ``rel_step`` (module docstring):

    - "std": the standard deviation (float64 accumulation);
    - "robust": the RMS deviation from the median after clipping every deviation to
      ``ROBUST_CLIP * 1.4826 * MAD``, the MAD being the median |deviation| of the values that
      differ from the median (so exact zeros of a sparse tensor do not shrink it). For a Gaussian or
      Laplacian tensor this is within a few percent of the std; a handful of outliers, which set the
      std of a heavy-tailed tensor, move it by at most ``ROBUST_CLIP`` robust sigmas each. A tensor
      of more than ``ROBUST_SAMPLE`` values is measured on a fixed sample of that many, evenly
      spread over it (index ``k * n // ROBUST_SAMPLE``), or on all values if the sample is constant.

    A constant tensor (spread 0) gets max|w| (0 if it is all zeros); non-finite values give 0.
    Deterministic: no randomness, no dependence on the thread count.
    """
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {SPREADS}, got {spread!r}")
    v = np.asarray(values).reshape(-1)
    if v.size == 0:
        return 0.0
    if spread == "std":
        s = float(np.std(v, dtype=np.float64))  # float64 accumulation, no float64 copy
    else:
        s = _robust_spread(v)
    if not math.isfinite(s):
        return 0.0
    if s == 0.0:
        return float(np.max(np.abs(v)))
    return s


def _robust_spread(v: np.ndarray) -> float:
    n = v.size
    if n <= ROBUST_SAMPLE:
        return _clipped_rms(np.asarray(v, dtype=np.float64))
    # evenly spread indices with a non-integer spacing, so that the sample does not keep hitting
    # the same columns of a row-major matrix
    idx = (np.arange(ROBUST_SAMPLE, dtype=np.int64) * n) // ROBUST_SAMPLE
    s = _clipped_rms(np.asarray(v[idx], dtype=np.float64))
    if s == 0.0:  # the sample is constant; the rest of the tensor may not be
        s = _clipped_rms(np.asarray(v, dtype=np.float64))
    return s


def _clipped_rms(x: np.ndarray) -> float:
    """RMS deviation from the median, deviations clipped to ROBUST_CLIP robust sigmas (NaN if
    ``x`` holds a non-finite value)."""
    if not np.all(np.isfinite(x)):
        return float("nan")
    dev = np.abs(x - float(np.median(x)))
    moved = dev[dev > 0]
    if moved.size == 0:
        return 0.0
    clip = ROBUST_CLIP * MAD_TO_SIGMA * float(np.median(moved))
    np.minimum(dev, clip, out=dev)
    return math.sqrt(float(np.sum(dev * dev)) / x.size)
