"""``CodecConfig``: every choice ``nnpress.compress`` makes, in one object (numpy only).

Step size of a quantized tensor, first match wins:
  1. a per-tensor override (``overrides[name]``, or the first glob pattern that matches, in order)
     with ``step`` (absolute) or ``rel_step`` (times the tensor's standard deviation);
  2. ``CodecConfig.step`` (one absolute step for all tensors);
  3. ``CodecConfig.qp`` (NNCodec's integer knob: ``step = 2 ** (qp / 4)``);
  4. ``CodecConfig.rel_step * std(tensor)`` (the default quality knob; a zero tensor uses step 1).
``lam`` (the rate-distortion trade-off handed to the quantizer) is ``lam_scale * step**2`` unless an
override gives ``lam`` directly. Tensors whose role is in ``lossless_roles`` (and every non-float
tensor) are stored exactly; an override may force ``lossless=True/False`` for one tensor.

A tuner passes its plan as ``overrides={name: TensorPlan(step=..., method=..., lam=...)}``.

Channel scales: a plan may carry int8 step exponents per row and/or column
(``TensorPlan(row_scale_exp=..., col_scale_exp=...)``, scale ``2**(e/8)``; weight (i, j) then uses
``(step * row_scale[i]) * col_scale[j]``). With ``CodecConfig(channel_scales=True)`` ``compress``
derives them from the per-weight ``importance`` it is given (``tune.channel_scales_from_importance``)
for tensors whose plan has none.
"""
from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import numpy as np

__all__ = ["CodecConfig", "TensorPlan", "ResolvedPlan", "METHODS"]

METHODS = ("nearest", "rdoq", "trellis")
_ROLES = ("weight", "bias", "norm", "embedding", "buffer", "other")


@dataclass(frozen=True)
class TensorPlan:
    """Per-tensor choices; ``None`` fields fall back to the config's."""

    step: float | None = None
    rel_step: float | None = None
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


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass(frozen=True)
class CodecConfig:
    """Configuration of :func:`nnpress.compress` (see the module docstring for the step rules).

    method:         "nearest" | "rdoq" | "trellis" — how levels are chosen. The default is "nearest":
                    with lam_scale = 0 RDOQ gives the same levels, slower, and without Fisher
                    importance a larger step beats RDOQ at equal fidelity (MiniLM, bench/RESULTS.md).
    step, qp, rel_step: the step size (absolute, NNCodec-style qp, or relative to each tensor's std).
    lam_scale:      RDOQ/trellis trade-off, ``lam = lam_scale * step**2`` (0 = distortion only).
    lossless_roles: roles stored exactly (bias, norm, buffer, other by default; "weight" and
                    "embedding" are quantized).
    block_elements: target elements per independently decodable row block of a large tensor.
    threads:        worker threads for quantizing and coding (None = all cores).
    overrides:      name or glob pattern -> TensorPlan (or a dict of its fields).
    channel_scales: derive per-row/per-column step scales from ``compress(importance=...)`` for
                    tensors whose plan has none (module docstring; the file becomes format 1.1).
    """

    method: str = "nearest"
    step: float | None = None
    qp: int | None = None
    rel_step: float = 1.0 / 32
    lam_scale: float = 0.0
    lossless_roles: tuple = ("bias", "norm", "buffer", "other")
    block_elements: int = 1 << 18
    threads: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    channel_scales: bool = False

    def __post_init__(self):
        if not isinstance(self.channel_scales, bool):
            raise TypeError(f"CodecConfig.channel_scales must be a bool, got {self.channel_scales!r}")
        if self.method not in METHODS:
            raise ValueError(f"CodecConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.step is not None and not (_is_real(self.step) and math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"CodecConfig.step must be a finite number > 0 or None, got {self.step!r}")
        if self.qp is not None and (isinstance(self.qp, bool) or not isinstance(self.qp, (int, np.integer))
                                    or not -200 <= self.qp <= 100):
            raise ValueError(f"CodecConfig.qp must be an int in [-200, 100] or None, got {self.qp!r}")
        if not (_is_real(self.rel_step) and math.isfinite(self.rel_step) and self.rel_step > 0):
            raise ValueError(f"CodecConfig.rel_step must be a finite number > 0, got {self.rel_step!r}")
        if not (_is_real(self.lam_scale) and math.isfinite(self.lam_scale) and self.lam_scale >= 0):
            raise ValueError(f"CodecConfig.lam_scale must be a finite number >= 0, got {self.lam_scale!r}")
        roles = (self.lossless_roles,) if isinstance(self.lossless_roles, str) else tuple(self.lossless_roles)
        for r in roles:
            if r not in _ROLES:
                raise ValueError(f"CodecConfig.lossless_roles: unknown role {r!r}; roles are {_ROLES}")
        object.__setattr__(self, "lossless_roles", roles)
        if (isinstance(self.block_elements, bool) or not isinstance(self.block_elements, (int, np.integer))
                or self.block_elements < 1):
            raise ValueError(f"CodecConfig.block_elements must be a positive int, got {self.block_elements!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"CodecConfig.threads must be a positive int or None, got {self.threads!r}")
        if not isinstance(self.overrides, Mapping):
            raise TypeError("CodecConfig.overrides must be a mapping of name/pattern -> TensorPlan")
        plans = {}
        for k, v in self.overrides.items():
            if not isinstance(k, str):
                raise TypeError(f"CodecConfig.overrides keys must be str, got {k!r}")
            if isinstance(v, Mapping):
                v = TensorPlan(**v)
            if not isinstance(v, TensorPlan):
                raise TypeError(f"CodecConfig.overrides[{k!r}] must be a TensorPlan or dict, got {type(v).__name__}")
            plans[k] = v
        object.__setattr__(self, "overrides", plans)

    def replace(self, **changes) -> "CodecConfig":
        return replace(self, **changes)

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def override_for(self, name: str) -> TensorPlan | None:
        plan = self.overrides.get(name)
        if plan is not None:
            return plan
        for pattern, p in self.overrides.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
                return p
        return None

    def resolve(self, name: str, role: str, dtype: str, values: np.ndarray | None) -> ResolvedPlan:
        """The plan for one tensor; ``values`` (float) is needed only for a relative step."""
        o = self.override_for(name) or TensorPlan()
        is_float = dtype in ("float32", "float16", "bfloat16", "float64")
        lossless = role in self.lossless_roles if o.lossless is None else o.lossless
        if not is_float or lossless:
            return ResolvedPlan(lossless=True)
        method = o.method or self.method
        if o.step is not None:
            step = float(o.step)
        elif o.rel_step is not None:
            step = _rel_step(values, o.rel_step)
        elif self.step is not None:
            step = float(self.step)
        elif self.qp is not None:
            step = 2.0 ** (self.qp / 4.0)
        else:
            step = _rel_step(values, self.rel_step)
        if o.lam is not None:
            lam = float(o.lam)
        else:
            scale = self.lam_scale if o.lam_scale is None else o.lam_scale
            lam = float(scale) * step * step
        return ResolvedPlan(lossless=False, method=method, step=step, lam=lam,
                            row_scale_exp=o.row_scale_exp, col_scale_exp=o.col_scale_exp)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lossless_roles"] = list(self.lossless_roles)
        d["overrides"] = {k: {f: v for f, v in asdict(p).items() if v is not None} for k, p in self.overrides.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CodecConfig":
        d = dict(d)
        if "lossless_roles" in d:
            d["lossless_roles"] = tuple(d["lossless_roles"])
        return cls(**d)


def _rel_step(values: np.ndarray | None, rel: float) -> float:
    if values is None or values.size == 0:
        return 1.0
    v = np.asarray(values)
    std = float(np.std(v, dtype=np.float64))  # float64 accumulation, no float64 copy
    if not math.isfinite(std) or std == 0.0:
        m = float(np.max(np.abs(v))) if math.isfinite(std) else 0.0
        return m * rel if m > 0 else 1.0
    return std * float(rel)
