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

    def __post_init__(self):
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

    def __post_init__(self):
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
        return ResolvedPlan(lossless=False, method=method, step=step, lam=lam)

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
