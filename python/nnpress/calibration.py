"""Calibration tasks and fidelity budgets: what "the smallest file for the fidelity you choose" is
measured against.

A :class:`Task` is a model with calibration data, split once into two disjoint parts:
``fit`` (the batches the Fisher diagonal and K-FAC blocks are estimated on) and ``heldout`` (the
batches a budget is scored on; nothing estimated from data ever sees them). ``task.evaluate(state)``
runs the held-out batches with the weights ``state`` and returns every metric that applies to the
task's kind, comparing with the original model's outputs (computed once).

A :class:`Budget` is one metric and the value it must reach (``parse_budget("cos_mean=0.999")``).

Importing this module needs only numpy; torch is imported by the functions that run a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("text-embedding", "causal-lm", "sequence-classification", "module")


class CalibrationError(ValueError):
    """Calibration input that cannot be used: data that does not fit the model, an empty or
    unknown calibration file, too few samples to split, a metric that does not apply. Raised before
    anything is written."""


@dataclass(frozen=True)
class Metric:
    """A fidelity metric over the held-out outputs. ``fn(ref, out, labels)`` gets the original
    model's outputs, the compressed model's outputs (lists of float tensors, one per batch) and the
    batches' labels (or None) and returns a float. ``higher_is_better``: the budget is a minimum
    (else a maximum). ``needs_labels``: applies only when the calibration data has labels."""

    name: str
    fn: Callable[[Sequence[Any], Sequence[Any], Sequence[Any] | None], float]
    higher_is_better: bool
    description: str
    needs_labels: bool = False
    # for a metric that is a mean over samples: (ref, out) -> one value per sample (the first axis of
    # each batch), from which Task.evaluate gives the standard error of the held-out mean
    per_sample: Callable[[Sequence[Any], Sequence[Any]], Any] | None = None


def _cosines(ref, out):
    """Cosine of each sample's output with the original's (batches may differ in shape)."""
    import torch

    return torch.cat(
        [
            torch.nn.functional.cosine_similarity(
                r.reshape(r.shape[0], -1).double(), o.reshape(o.shape[0], -1).double(), dim=1, eps=1e-12
            )
            for r, o in zip(ref, out)
        ]
    )


def _cos_mean(ref, out, labels=None) -> float:
    return float(_cosines(ref, out).mean())


def _cos_min(ref, out, labels=None) -> float:
    return float(_cosines(ref, out).min())


def _rel_error(ref, out, labels=None) -> float:
    num = sum(float((o.double() - r.double()).square().sum()) for r, o in zip(ref, out))
    den = sum(float(r.double().square().sum()) for r in ref)
    return math.sqrt(num) / max(math.sqrt(den), 1e-30)


def _log_probs(outs):
    """Per-position log-probabilities over the last axis (logits of any rank)."""
    import torch

    return torch.cat([torch.log_softmax(o.double().reshape(-1, o.shape[-1]), dim=-1) for o in outs])


def _kl(ref, out, labels=None) -> float:
    """Mean KL(original || compressed) of the output distributions, in nats per position."""
    p, q = _log_probs(ref), _log_probs(out)
    return float((p.exp() * (p - q)).sum(dim=-1).mean())


def _per_sample(values: Callable[[Any, Any], Any]) -> Callable[[Sequence[Any], Sequence[Any]], Any]:
    """Per-sample means of a per-position quantity ``values(ref_batch, out_batch)``."""

    def fn(ref, out):
        import torch

        return torch.cat([values(r, o).reshape(r.shape[0], -1).double().mean(dim=1) for r, o in zip(ref, out)])

    return fn


def _kl_positions(r, o):
    import torch

    p = torch.log_softmax(r.double(), dim=-1)
    q = torch.log_softmax(o.double(), dim=-1)
    return (p.exp() * (p - q)).sum(dim=-1)


def _top1_positions(r, o):
    return r.argmax(dim=-1) == o.argmax(dim=-1)


def _top1_agreement(ref, out, labels=None) -> float:
    a = _log_probs(ref).argmax(dim=-1)
    b = _log_probs(out).argmax(dim=-1)
    return float((a == b).double().mean())


def _accuracy_drop(ref, out, labels) -> float:
    """Top-1 accuracy of the original minus that of the compressed model, in percentage points."""
    import torch

    y = torch.cat([torch.as_tensor(x).reshape(-1) for x in labels])
    acc_ref = (_log_probs(ref).argmax(dim=-1) == y).double().mean()
    acc_out = (_log_probs(out).argmax(dim=-1) == y).double().mean()
    return float(100.0 * (acc_ref - acc_out))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("cos_mean", _cos_mean, True, "mean cosine similarity of the outputs (per sample)", per_sample=_cosines),
        Metric("cos_min", _cos_min, True, "smallest cosine similarity of the outputs over the samples"),
        Metric("rel_error", _rel_error, False, "relative L2 error of all outputs, ||out - ref|| / ||ref||"),
        Metric(
            "kl",
            _kl,
            False,
            "mean KL divergence of the output distributions (nats per position)",
            per_sample=_per_sample(_kl_positions),
        ),
        Metric(
            "top1",
            _top1_agreement,
            True,
            "fraction of positions whose top-1 class/token is unchanged",
            per_sample=_per_sample(_top1_positions),
        ),
        Metric(
            "accuracy_drop",
            _accuracy_drop,
            False,
            "top-1 accuracy lost against the labels, in percentage points",
            needs_labels=True,
        ),
    )
}

# The metrics reported for each kind (the first is the default budget metric).
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "text-embedding": ("cos_mean", "cos_min", "rel_error"),
    "causal-lm": ("kl", "top1", "rel_error"),
    "sequence-classification": ("kl", "top1", "rel_error", "accuracy_drop"),
    "module": ("rel_error", "cos_mean", "cos_min", "kl", "top1", "accuracy_drop"),
}


@dataclass(frozen=True)
class Budget:
    """``metric`` must reach ``value``: at least it when the metric is higher-is-better, at most
    it otherwise."""

    metric: str
    value: float

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"unknown budget metric {self.metric!r}; known: {', '.join(METRICS)}")
        if not math.isfinite(self.value):
            raise ValueError(f"budget value must be finite, got {self.value!r}")

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    def met(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value >= self.value if self.higher_is_better else value <= self.value

    def __str__(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.value:g}"


def parse_budget(text: str | Budget | Mapping[str, float]) -> Budget:
    """``"cos_mean=0.999"`` (also ``>=``/``<=`` in place of ``=``), a one-entry mapping, or a
    Budget."""
    if isinstance(text, Budget):
        return text
    if isinstance(text, Mapping):
        if len(text) != 1:
            raise ValueError(f"a budget is one metric and its value, got {dict(text)!r}")
        ((k, v),) = text.items()
        return Budget(str(k), float(v))
    if not isinstance(text, str):
        raise TypeError(f"budget must be 'METRIC=VALUE', a mapping or a Budget, not {type(text).__name__}")
    for sep in (">=", "<=", "="):
        if sep in text:
            k, _, v = text.partition(sep)
            try:
                value = float(v)
            except ValueError:
                raise ValueError(f"budget {text!r}: {v.strip()!r} is not a number") from None
            b = Budget(k.strip(), value)
            want = ">=" if b.higher_is_better else "<="
            if sep != "=" and sep != want:
                raise ValueError(f"budget {text!r}: {b.metric} is {'a minimum' if want == '>=' else 'a maximum'}")
            return b
    raise ValueError(f"budget {text!r} is not METRIC=VALUE (e.g. cos_mean=0.999)")


@dataclass
class Task:
    """A model with calibration data split into ``fit`` and ``heldout`` batches.

    model        the torch module, float32, eval mode, on the CPU
    kind         one of KINDS
    fit          batches for the Fisher diagonal / K-FAC blocks (whatever fisher_diagonal takes:
                 a tensor, a tuple (inputs, labels), or a dict of keyword arguments)
    heldout      batches the budget is scored on; disjoint from ``fit``
    output_fn    model output -> the (batch, ...) float tensor that metrics compare (and whose
                 likelihood the Fisher uses)
    fisher_output "classifier" or "gaussian": the likelihood of ``output_fn``'s output
    labels       the held-out labels per batch, or None
    names        module state_dict name -> the tensor name written to the file (the source
                 checkpoint's names, so the decoded file loads where the source did); a name it
                 does not hold is written as it is. Tensors that share storage (tied weights) may
                 map to one file name: the file stores them once under it (``lm_head.weight``
                 tied to the input embedding, which the checkpoint does not store).
    extra        source tensors the module does not hold (file name -> tensor), written exactly so
                 the file has every tensor of the source (e.g. an old checkpoint's position_ids)
    dtypes       file name -> the source's dtype ("float16", "bfloat16", ...) where it differs
                 from the module's float32; ``state_dict()`` casts to it
    source       what the model was loaded from, for the report
    split        how the data was split, for the report ({"samples": n, "fit": k, "heldout": m,
                 "seed": s, "rule": ..., ...})

    Per-tensor inputs (Fisher, Hessians) are computed on ``model`` under its own names; map them to
    file names with ``file_names(d)``. ``state_dict()`` is what the file stores; ``evaluate``
    takes a decoded state under either kind of name.
    """

    model: Any
    kind: str
    fit: list
    heldout: list
    output_fn: Callable[[Any], Any]
    fisher_output: str = "gaussian"
    labels: list | None = None
    names: dict[str, str] = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    source: str = ""
    _reference: list | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; known: {', '.join(KINDS)}")
        if not self.fit:
            raise CalibrationError("the calibration data left no batch to estimate on (fit is empty)")
        if not self.heldout:
            raise CalibrationError("the calibration data left no held-out batch to score the budget on")

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics that apply to this task (the first is the default budget metric)."""
        ms = KIND_METRICS[self.kind]
        return tuple(m for m in ms if self.labels is not None or not METRICS[m].needs_labels)

    def check_budget(self, budget: Budget) -> None:
        if budget.metric not in self.metrics:
            raise CalibrationError(
                f"metric {budget.metric!r} does not apply to a {self.kind} task"
                + (" without labels" if METRICS[budget.metric].needs_labels and self.labels is None else "")
                + f"; use one of {', '.join(self.metrics)}"
            )

    def file_name(self, module_name: str) -> str:
        """The file name of a module tensor."""
        return self.names.get(module_name, module_name)

    def file_names(self, per_tensor: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A per-tensor dict keyed by module names (e.g. a Fisher diagonal) re-keyed by file names
        (of tied tensors, the first)."""
        if per_tensor is None:
            return None
        out: dict[str, Any] = {}
        for name, v in per_tensor.items():
            out.setdefault(self.file_name(name), v)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The tensors the file stores, by file name: the module's tensors (a tied group once)
        cast to the source's dtypes, then ``extra``."""
        import torch

        out: dict[str, Any] = {}
        for mod_name, t in self.model.state_dict().items():
            out.setdefault(self.file_name(mod_name), t)
        cast: dict[Any, Any] = {}
        for name, t in out.items():
            want = self.dtypes.get(name)
            if want and str(t.dtype) != f"torch.{want}":
                key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
                if key not in cast:
                    cast[key] = t.detach().to(getattr(torch, want))
                out[name] = cast[key]
        for name, t in self.extra.items():
            out.setdefault(name, t)
        return out

    def _module_names(self, name: str, own: Mapping[str, Any]) -> list[str]:
        """The module tensors a state entry sets: those written under that file name, or the
        module tensor of that name; [] for an ``extra`` tensor (not part of the model)."""
        hits = [m for m in own if self.file_name(m) == name]
        if hits:
            return hits
        if name in own:
            return [name]
        if name in self.extra:
            return []
        raise KeyError(f"the model has no tensor named {name!r}")

    def outputs(self, state: Mapping[str, Any] | None = None) -> list:
        """``output_fn`` of the model on every held-out batch, with ``state`` (module or file
        names -> arrays or tensors) loaded in place of the model's tensors for the call (None: the
        original weights). The model's own tensors are restored afterwards."""
        import torch

        from .fisher.batches import _split_batch

        own = self.model.state_dict()
        saved = {}
        try:
            if state:
                targets = [(name, arr, self._module_names(name, own)) for name, arr in state.items()]
                # every original saved before anything is set: tied tensors share storage
                for _, _, mod_names in targets:
                    for mod_name in mod_names:
                        if mod_name not in saved:
                            saved[mod_name] = own[mod_name].detach().clone()
                for name, arr, mod_names in targets:
                    for mod_name in mod_names:
                        t = own[mod_name]
                        v = arr if isinstance(arr, torch.Tensor) else torch.as_tensor(np.asarray(arr))
                        if v.numel() != t.numel():
                            raise ValueError(
                                f"tensor {name!r}: {tuple(v.shape)} does not fit the model's {tuple(t.shape)}"
                            )
                        with torch.no_grad():
                            t.copy_(v.reshape(t.shape).to(t.dtype))
            outs = []
            with torch.no_grad():
                for i, batch in enumerate(self.heldout):
                    inputs, _ = _split_batch(batch, f"held-out batch {i}")
                    args, kwargs = inputs.full()
                    outs.append(self.output_fn(self.model(*args, **kwargs)).detach().float())
            return outs
        finally:
            with torch.no_grad():
                for name, t in saved.items():
                    own[name].copy_(t)

    def reference(self) -> list:
        if self._reference is None:
            self._reference = self.outputs(None)
        return self._reference

    def evaluate(self, state: Mapping[str, Any] | None, *, standard_errors: bool = False):
        """Every applicable metric of the model with ``state`` loaded, on the held-out batches.
        ``standard_errors=True``: (metrics, {metric: standard error of its held-out mean}) for the
        metrics that are means over samples (the spread a new sample set of the same size would
        show)."""
        ref, out = self.reference(), self.outputs(state)
        metrics = {m: METRICS[m].fn(ref, out, self.labels) for m in self.metrics}
        if not standard_errors:
            return metrics
        errors = {}
        for m in self.metrics:
            if METRICS[m].per_sample is not None:
                v = METRICS[m].per_sample(ref, out)
                n = int(v.numel())
                errors[m] = float(v.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
        return metrics, errors


def load_task(source, calibration, **kwargs) -> Task:
    """A :class:`Task` from what users hold; see :func:`nnpress.sources.load_task`."""
    from .sources import load_task as _load

    return _load(source, calibration, **kwargs)
