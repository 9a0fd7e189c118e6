"""The diagonal Fisher information of a torch model's parameters.

The Fisher diagonal weighs each weight's quantization error in DeepCABAC's rate-distortion
quantization: distortion = sum_i F_i (w_i - w_hat_i)^2.

Contract
--------
``fisher_diagonal(model, batches, ...)`` -> ``{name: tensor}`` with the names, shapes and devices of
``model.named_parameters()`` (optionally filtered), holding

    F = (1/N) sum_n  (d log p(y_n | x_n, w) / dw)^2          (element-wise square)

the diagonal of E[s s^T], s = grad_w log p(y|x,w), averaged over the N examples seen. Each example's
gradient is exact (``torch.func`` ``vmap(grad(...))`` over chunks of a batch, or, when vmap cannot
run the model, one backward pass per example); it is never a squared mini-batch gradient. The
likelihood (``mode``, ``output``, ``sigma``) and the sampled draws are those of
:mod:`nnpress.fisher.likelihood`; batches and model outputs those of :mod:`nnpress.fisher.batches`.
The result does not depend on ``chunk_size`` or ``method``.

Surprises
---------
- The model runs in eval mode; each module's train/eval flag is restored afterwards. The model's
  parameters are never modified and their ``requires_grad`` flags are ignored.
- Results are float32 (float64 for float64 parameters) whatever the parameter dtype.
- Memory: each vmap chunk holds chunk_size full per-example gradients; ``chunk_size=None`` picks the
  largest chunk whose gradients fit in 256 MiB (at least 1).
- ``method="auto"`` tries vmap and, if it raises (data-dependent control flow, ``.item()``, in-place
  updates of buffers, unsupported ops), warns once and finishes with the per-example loop.

Importing this module needs only the standard library; torch is imported inside the functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Union

from .batches import (
    _calibration_batches,
    _extractor,
    _forward,
    _Inputs,
    _keep,
    _make_generator,
    _TrainFlags,
)
from .likelihood import (
    _check_arguments,
    _check_labels,
    _classes_from_uniform,
    _draw_targets,
    _log_likelihood,
    _resolve_output,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    Seed = Union[int, torch.Generator]

GRAD_MEMORY_BUDGET = 256 * 2**20  # bytes of per-example gradients held by one vmap chunk

_METHODS = ("auto", "vmap", "loop")


def fisher_diagonal(
    model: torch.nn.Module,
    batches: Iterable[Any],
    mode: str = "sampled",
    output: str = "auto",
    sigma: float | None = None,
    param_filter: Callable[[str, torch.nn.Parameter], bool] | Iterable[str] | None = None,
    max_examples: int | None = None,
    *,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    seed: Seed = 0,
    chunk_size: int | None = None,
    method: str = "auto",
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of ``model``'s parameters, averaged over the examples of
    ``batches``.

    Arguments (see the module docstring for the exact definitions):
      mode          "sampled" (y from the model's predictive distribution)
                    | "empirical" (batch labels)
      output        "auto" | "classifier" (softmax over the last axis)
                    | "gaussian" (N(f(x), sigma^2 I))
      sigma         std of the gaussian likelihood; None -> 1.0. Ignored for classifiers.
      param_filter  None (all parameters), a callable (name, param) -> bool, or a collection of
                    names
      max_examples  stop after this many examples (None: use every batch)
      output_fn     maps the model's output to a (batch, ...) tensor
      seed          int or CPU torch.Generator for the sampled draws
      chunk_size    examples per vmap call; None: as many as fit GRAD_MEMORY_BUDGET
      method        "auto" (vmap, falling back to the loop) | "vmap" | "loop"

    Returns {name: tensor} in named_parameters() order, each the shape and device of its parameter.
    Raises ValueError for bad arguments, for empirical mode without labels, for labels/outputs whose
    shapes disagree, or when the batches hold no example; TypeError for batches or outputs of an
    unsupported type; whatever the model raises (with method="vmap", whatever vmap raises).
    """
    name = "fisher_diagonal"
    sigma = _check_arguments(name, mode, output, sigma, max_examples)
    if method not in _METHODS:
        raise ValueError(f"{name}: method must be one of {_METHODS}, got {method!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"{name}: chunk_size must be >= 1, got {chunk_size!r}")
    selected, others = _select_params(model, param_filter)
    if not selected:
        raise ValueError(f"{name}: no parameter selected (empty model or param_filter)")
    if chunk_size is None:
        chunk_size = _chunk_size_for(selected)

    run = _DiagonalRun(model, mode, output, sigma, output_fn, _make_generator(seed), method)
    acc = run.start(selected, others)
    n_seen = 0
    with _TrainFlags(model):
        for where, inputs, labels, size in _calibration_batches(batches, name, mode, max_examples):
            for start in range(0, size, chunk_size):
                run.add_chunk(inputs, labels, size, start, min(start + chunk_size, size), where)
            n_seen += size
    if n_seen == 0:
        raise ValueError(f"{name}: the batches hold no example")
    return {n: a.div_(n_seen) for n, a in acc.items()}


def _select_params(model: Any, param_filter: Any) -> tuple[dict, dict]:
    """(selected, others) name -> parameter, in named_parameters() order."""
    params = dict(model.named_parameters())
    keep = _keep(params, param_filter, "param_filter")
    selected = {n: p for n, p in params.items() if n in keep}
    others = {n: p for n, p in params.items() if n not in keep}
    return selected, others


def _chunk_size_for(selected: dict) -> int:
    """The most examples whose gradients of the ``selected`` parameters fit GRAD_MEMORY_BUDGET."""
    bytes_per_example = sum(p.numel() * p.element_size() for p in selected.values())
    return max(1, GRAD_MEMORY_BUDGET // max(1, bytes_per_example))


class _DiagonalRun:
    """One fisher_diagonal call: for each chunk of a batch, the targets y (labels, or the batch's
    one sampled draw) and the per-example gradients, squared and summed into ``acc`` - by vmap, or
    by a loop."""

    def __init__(self, model, mode, output, sigma, output_fn, gen, method) -> None:
        self.model, self.mode, self.output, self.sigma = model, mode, output, sigma
        self.output_fn, self.extract, self.gen = output_fn, _extractor(output_fn), gen
        self.method = method
        self.use_vmap = method in ("auto", "vmap")
        self.kind: str | None = None  # "classifier" or "gaussian", resolved on the first chunk
        self.draw: Any = None  # sampled mode: the current batch's one random draw

    def start(self, selected: dict, others: dict) -> dict:
        """Zero accumulators for the ``selected`` parameters (float32, or float64 for float64)."""
        import torch

        self.diff = {n: p.detach() for n, p in selected.items()}
        self.const = {n: p.detach() for n, p in others.items()}
        self.device = next(iter(self.diff.values())).device
        self.acc = {
            n: torch.zeros(
                p.shape,
                device=p.device,
                dtype=torch.float64 if p.dtype == torch.float64 else torch.float32,
            )
            for n, p in selected.items()
        }
        return self.acc

    def add_chunk(self, inputs: _Inputs, labels: Any, size: int, start: int, stop: int, where: str) -> None:
        """Add examples [start, stop) of a batch whose first ``size`` examples are used."""
        targs, tkwargs = inputs.sliced(start, stop)
        f = self._output_if_needed(inputs, targs, tkwargs, labels, where)
        if self.mode == "empirical":
            target = labels[start:stop]
            if f is not None:
                _check_labels(self.kind, f, target, where)
        else:
            if start == 0:
                self.draw = self._draw(inputs, f, size, where)
            target = self.draw[start:stop]
            if self.kind == "classifier":
                target = _classes_from_uniform(f, target)
        self._accumulate(inputs, targs, tkwargs, target.to(self.device), where)

    def _output_if_needed(self, inputs, targs, tkwargs, labels, where) -> Any:
        """The chunk's output from a forward pass without gradients, only where it is needed: on
        the first chunk (to resolve output="auto" and check the labels) and to sample classes from
        the predictive distribution; else None."""
        if self.kind is None or (self.mode == "sampled" and self.kind == "classifier"):
            f, from_logits = _forward(self.model, inputs, targs, tkwargs, self.output_fn, where)
            if self.kind is None:
                self.kind = _resolve_output(self.output, from_logits, f, labels)
            return f
        return None

    def _draw(self, inputs: _Inputs, f: Any, size: int, where: str) -> Any:
        """The sampled-mode draw for ``size`` examples; it needs only the output's shape, so
        without an output at hand one example is run."""
        if f is None:
            f, _ = _forward(self.model, inputs, *inputs.sliced(0, 1), self.output_fn, where)
        return _draw_targets(self.kind, f, size, self.gen)

    def _objective(self, inputs: _Inputs) -> Callable:
        from torch.func import functional_call

        kind = self.kind

        def objective(params: dict, targs: dict, tkwargs: dict, target: Any) -> Any:
            # One example without its batch dimension: give it back a batch of one.
            args, kwargs = inputs.call_args(
                {i: t.unsqueeze(0) for i, t in targs.items()},
                {k: t.unsqueeze(0) for k, t in tkwargs.items()},
            )
            out = functional_call(self.model, (params, self.const), args, kwargs)
            return _log_likelihood(kind, self.mode, self.sigma, self.extract(out), target.unsqueeze(0))

        return objective

    def _accumulate(self, inputs, targs, tkwargs, target, where) -> None:
        objective = self._objective(inputs)
        if self.use_vmap:
            try:
                self._by_vmap(objective, targs, tkwargs, target)
                return
            except Exception as exc:  # any vmap failure means: use the loop
                if self.method == "vmap":
                    raise
                self.use_vmap = False
                warnings.warn(
                    f"{where}: torch.func.vmap could not run the model ({type(exc).__name__}: "
                    f"{str(exc)[:200]}); computing per-example gradients one by one instead",
                    RuntimeWarning,
                    stacklevel=4,  # the caller of fisher_diagonal
                )
        self._by_loop(objective, targs, tkwargs, target)

    def _by_vmap(self, objective, targs, tkwargs, target) -> None:
        from torch.func import grad, vmap

        grads = vmap(grad(objective), in_dims=(None, 0, 0, 0))(self.diff, targs, tkwargs, target)
        for name, g in grads.items():
            g = g.to(self.acc[name].dtype)
            self.acc[name] += (g * g).sum(0)

    def _by_loop(self, objective, targs, tkwargs, target) -> None:
        import torch

        leaves = {n: p.detach().requires_grad_(True) for n, p in self.diff.items()}
        for i in range(target.shape[0]):
            with torch.enable_grad():
                ll = objective(
                    leaves,
                    {k: t[i] for k, t in targs.items()},
                    {k: t[i] for k, t in tkwargs.items()},
                    target[i],
                )
                grads = torch.autograd.grad(ll, list(leaves.values()), allow_unused=True)
            for name, g in zip(leaves, grads):
                if g is not None:
                    g = g.to(self.acc[name].dtype)
                    self.acc[name] += g * g
