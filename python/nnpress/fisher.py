"""Diagonal Fisher information of a torch model's parameters, and a data-free sensitivity probe.

The Fisher diagonal weighs each weight's quantization error in DeepCABAC's rate-distortion
quantization: distortion = sum_i F_i (w_i - w_hat_i)^2.

Contract
--------
``fisher_diagonal(model, batches, ...)`` -> ``{name: tensor}`` with the names, shapes and devices of
``model.named_parameters()`` (optionally filtered), holding

    F = (1/N) sum_n  (d log p(y_n | x_n, w) / dw)^2          (element-wise square)

the diagonal of E[s s^T], s = grad_w log p(y|x,w), averaged over the N examples seen. Each example's
gradient is exact (``torch.func`` ``vmap(grad(...))`` over chunks of a batch, or, when vmap cannot
run the model, one backward pass per example); it is never a squared mini-batch gradient.

- ``mode="sampled"`` (default, the true Fisher): y is drawn from the model's own predictive
  distribution. ``mode="empirical"``: y is the batch's label/target.
- ``output="classifier"``: p(y|x) = softmax(logits) over the last axis; logits of shape (B, C), or
  (B, ..., C) for per-position outputs (token classification, language models), where log p sums
  over positions and empirical labels equal to -100 are ignored.
  ``output="gaussian"`` (regression / embedding models): p(y|x) = N(f(x), sigma^2 I). Then
  s = (y - f)/sigma^2 * J with J = df/dw, and E_y[s s^T] = J^T J / sigma^2: the sampled Fisher is an
  unbiased estimate of diag(J^T J)/sigma^2. ``sigma`` defaults to 1; a global scale of F is absorbed
  by the Lagrange multiplier lambda of RD quantization, so only relative values matter.
  ``output="auto"``: "classifier" if the model output has ``.logits`` or the labels are integers,
  "gaussian" if the labels are floating point; without labels, "classifier" for a 2-D output and
  "gaussian" otherwise. An embedding model returning (B, D) with no labels is therefore treated as a
  classifier under "auto": pass ``output="gaussian"`` for such models.
- Batches: an iterable of ``x`` (a tensor: ``model(x)``), ``(x,)`` or ``(x, y)`` tuples (``x`` a tensor,
  a tuple of tensors for several positional arguments, or a dict of keyword arguments), or dicts of
  keyword arguments (``model(**batch)``; the key ``"labels"``, if present, is taken out and used as y).
  Every tensor input and label must have the batch on dimension 0; non-tensor values are passed
  through unchanged.
- Model outputs: a tensor; an object or dict with ``logits``, else ``last_hidden_state``; or a
  tuple/list (its first element). ``output_fn(model_output) -> tensor (B, ...)`` overrides this.
- Randomness (sampled mode) comes only from ``seed`` (an int or a ``torch.Generator`` on the CPU), so
  the result is deterministic. Per batch of B examples, before any gradient, exactly one draw is made:
  classifier: ``u = torch.rand((B, *logits.shape[1:-1]), dtype=float64, generator=g)`` and
  y = the first class whose cumulative softmax probability (float64) exceeds u;
  gaussian: ``eps = torch.randn(f.shape, dtype=float32, generator=g)`` and y = f + sigma * eps.
  The result therefore does not depend on ``chunk_size`` or ``method``.

Surprises
---------
- The model runs in eval mode (dropout off, batch norm on running statistics) - the Fisher of the
  model as it will be deployed; each module's train/eval flag is restored afterwards. The model's
  parameters are never modified and their ``requires_grad`` flags are ignored.
- Results are float32 (float64 for float64 parameters) whatever the parameter dtype.
- Memory: each vmap chunk holds chunk_size full per-example gradients; ``chunk_size=None`` picks the
  largest chunk whose gradients fit in 256 MiB (at least 1).
- ``method="auto"`` tries vmap and, if it raises (data-dependent control flow, ``.item()``, in-place
  updates of buffers, unsupported ops), warns once and finishes with the per-example loop.
- ``max_examples`` cuts the batch that crosses it; the cut batch draws its noise with the kept size.

``probe_sensitivity(model, inputs, ...)`` is for when no calibration data exists: it perturbs one
tensor at a time with Gaussian noise of std ``rel_noise * std(tensor)`` and reports the mean squared
change of the output. See its docstring.

Importing this module needs only the standard library; torch is imported inside the functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:  # pragma: no cover
    import torch

    Seed = Union[int, torch.Generator]

__all__ = ["fisher_column_blocks", "fisher_diagonal", "fisher_row_blocks", "probe_sensitivity"]

IGNORE_INDEX = -100  # empirical classifier labels with this value contribute nothing
GRAD_MEMORY_BUDGET = 256 * 2**20  # bytes of per-example gradients held by one vmap chunk
LABEL_KEY = "labels"  # key of the labels in dict batches (the Hugging Face convention)

_MODES = ("sampled", "empirical")
_OUTPUTS = ("auto", "classifier", "gaussian")
_METHODS = ("auto", "vmap", "loop")


# ----------------------------------------------------------------------------------------------
# Batches and outputs
# ----------------------------------------------------------------------------------------------


class _Inputs:
    """A model call's inputs, split into batched tensors (mapped over) and static values."""

    def __init__(self, args: tuple, kwargs: dict, where: str) -> None:
        import torch

        self.args = tuple(args)
        self.static_kwargs = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
        self.targs = {i: a for i, a in enumerate(self.args) if isinstance(a, torch.Tensor)}
        self.tkwargs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        sizes = {t.shape[0] if t.dim() > 0 else None for t in self._tensors()}
        if not sizes:
            raise ValueError(f"{where}: the batch holds no tensor input")
        if None in sizes or len(sizes) != 1:
            raise ValueError(
                f"{where}: every tensor input needs the same batch size on dimension 0, got shapes "
                f"{[tuple(t.shape) for t in self._tensors()]}"
            )
        self.size = sizes.pop()

    def _tensors(self) -> list:
        return list(self.targs.values()) + list(self.tkwargs.values())

    def call_args(self, targs: dict, tkwargs: dict) -> tuple[tuple, dict]:
        """(args, kwargs) for the model, with the given tensors in place of the batched ones."""
        args = tuple(targs.get(i, a) for i, a in enumerate(self.args))
        return args, {**self.static_kwargs, **tkwargs}

    def full(self) -> tuple[tuple, dict]:
        return self.call_args(self.targs, self.tkwargs)

    def sliced(self, start: int, stop: int) -> tuple[dict, dict]:
        return (
            {i: t[start:stop] for i, t in self.targs.items()},
            {k: t[start:stop] for k, t in self.tkwargs.items()},
        )


def _split_batch(batch: Any, where: str) -> tuple[_Inputs, Any]:
    """(inputs, labels or None) from a tensor, an (x,) / (x, y) tuple, or a dict batch."""
    import torch

    labels = None
    if isinstance(batch, torch.Tensor):
        x: Any = batch
    elif isinstance(batch, Mapping):
        x = {k: v for k, v in batch.items() if k != LABEL_KEY}
        labels = batch.get(LABEL_KEY)
    elif isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        x = batch[0]
        labels = batch[1] if len(batch) == 2 else None
    else:
        raise TypeError(
            f"{where}: a batch must be a tensor, an (x,) or (x, y) tuple, or a dict of model "
            f"keyword arguments; got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    if isinstance(x, Mapping):
        inputs = _Inputs((), dict(x), where)
    elif isinstance(x, (tuple, list)):
        inputs = _Inputs(tuple(x), {}, where)
    else:
        inputs = _Inputs((x,), {}, where)
    if labels is not None:
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"{where}: labels must be a tensor, got {type(labels).__name__}")
        if labels.dim() == 0 or labels.shape[0] != inputs.size:
            raise ValueError(
                f"{where}: labels of shape {tuple(labels.shape)} do not match the batch size "
                f"{inputs.size}"
            )
    return inputs, labels


def _default_output(out: Any) -> tuple[Any, bool]:
    """(tensor, came_from_logits) for a model output; TypeError if none can be found."""
    import torch

    if isinstance(out, torch.Tensor):
        return out, False
    for key in ("logits", "last_hidden_state"):
        value = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value, key == "logits"
    if isinstance(out, (tuple, list)) and out:
        return _default_output(out[0])
    raise TypeError(
        f"cannot find the output tensor in a {type(out).__name__}; pass output_fn= to map the "
        f"model's output to a (batch, ...) tensor"
    )


def _extractor(output_fn: Callable | None) -> Callable:
    if output_fn is None:
        return lambda out: _default_output(out)[0]
    return output_fn


def _check_output(f: Any, batch_size: int, where: str) -> None:
    import torch

    if not isinstance(f, torch.Tensor) or not f.is_floating_point():
        raise TypeError(f"{where}: the model output must be a floating-point tensor, got {f!r:.80}")
    if f.dim() == 0 or f.shape[0] != batch_size:
        raise ValueError(
            f"{where}: the model output of shape {tuple(f.shape)} has no batch dimension of size "
            f"{batch_size} first"
        )


def _forward(
    model: Any, inputs: _Inputs, targs: dict, tkwargs: dict, output_fn: Any, where: str
) -> tuple[Any, bool]:
    """(output tensor, came_from_logits) of a batched forward pass without gradients."""
    import torch

    args, kwargs = inputs.call_args(targs, tkwargs)
    with torch.no_grad():
        out = model(*args, **kwargs)
        f, from_logits = _default_output(out) if output_fn is None else (output_fn(out), False)
    _check_output(f, next(iter({**targs, **tkwargs}.values())).shape[0], where)
    return f, from_logits


def _resolve_output(output: str, from_logits: bool, f: Any, labels: Any) -> str:
    if output != "auto":
        return output
    if from_logits:
        return "classifier"
    if labels is not None:
        return "gaussian" if labels.is_floating_point() else "classifier"
    return "classifier" if f.dim() == 2 else "gaussian"


def _check_labels(kind: str, f: Any, labels: Any, where: str) -> None:
    import torch

    if kind == "classifier":
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(
                f"{where}: classifier labels must be integer class indices, got {labels.dtype}"
            )
        if tuple(labels.shape) != tuple(f.shape[:-1]):
            raise ValueError(
                f"{where}: classifier labels of shape {tuple(labels.shape)} do not match logits "
                f"of shape {tuple(f.shape)} (expected {tuple(f.shape[:-1])})"
            )
    elif tuple(labels.shape) != tuple(f.shape):
        raise ValueError(
            f"{where}: gaussian targets of shape {tuple(labels.shape)} do not match the output "
            f"shape {tuple(f.shape)}"
        )


# ----------------------------------------------------------------------------------------------
# Log-likelihoods (the quantity differentiated per example)
# ----------------------------------------------------------------------------------------------


def _log_likelihood(kind: str, mode: str, sigma: float, f: Any, target: Any) -> Any:
    """log p(target | f) up to a constant, summed over one example's positions.

    For sampled gaussian, ``target`` is eps and the value is (eps . f) / sigma, whose gradient
    eps/sigma * df/dw = (y - f)/sigma^2 * df/dw is the score at y = f + sigma * eps.
    """
    import torch

    if kind == "classifier":
        logp = torch.log_softmax(f.float() if f.dtype in (torch.float16, torch.bfloat16) else f, -1)
        target = target.long()
        keep = target != IGNORE_INDEX
        picked = logp.gather(-1, torch.where(keep, target, 0).unsqueeze(-1)).squeeze(-1)
        return (picked * keep).sum()
    if mode == "sampled":
        return (target.to(f.dtype) * f).sum() / sigma
    diff = target.to(f.dtype) - f
    return -0.5 * (diff * diff).sum() / (sigma * sigma)


def _draw_targets(kind: str, f: Any, batch_size: int, gen: Any) -> Any:
    """The sampled-mode draw for one whole batch (see the module docstring)."""
    import torch

    if kind == "classifier":
        return torch.rand((batch_size, *f.shape[1:-1]), dtype=torch.float64, generator=gen)
    return torch.randn((batch_size, *f.shape[1:]), dtype=torch.float32, generator=gen)


def _classes_from_uniform(f: Any, u: Any) -> Any:
    import torch

    cdf = torch.softmax(f.double(), dim=-1).cumsum(-1)
    y = (cdf < u.to(cdf.device).unsqueeze(-1)).sum(-1)
    return y.clamp_(max=f.shape[-1] - 1)


# ----------------------------------------------------------------------------------------------
# fisher_diagonal
# ----------------------------------------------------------------------------------------------


def _keep(named: dict, flt: Any, what: str) -> set:
    """Names of ``named`` that a filter keeps: None (all), a callable (name, item) -> bool, or a
    collection of names, each of which must exist (ValueError naming the unknown ones)."""
    if flt is None:
        return set(named)
    if callable(flt):
        return {n for n, v in named.items() if flt(n, v)}
    keep = set(flt)
    unknown = sorted(keep - set(named))
    if unknown:
        raise ValueError(f"{what} names {unknown} that the model does not have")
    return keep


def _select_params(model: Any, param_filter: Any) -> tuple[dict, dict]:
    """(selected, others) name -> parameter, in named_parameters() order."""
    params = dict(model.named_parameters())
    keep = _keep(params, param_filter, "param_filter")
    selected = {n: p for n, p in params.items() if n in keep}
    others = {n: p for n, p in params.items() if n not in keep}
    return selected, others


def _make_generator(seed: Any) -> Any:
    import torch

    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError(f"seed: the generator must live on the CPU, not {seed.device}")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


class _TrainFlags:
    """Put every module in eval mode; restore each module's own flag on exit."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, flag in self.flags:
            module.training = flag


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
    """Diagonal Fisher information of ``model``'s parameters, averaged over the examples of ``batches``.

    Arguments (see the module docstring for the exact definitions):
      mode          "sampled" (y from the model's predictive distribution) | "empirical" (batch labels)
      output        "auto" | "classifier" (softmax over the last axis) | "gaussian" (N(f(x), sigma^2 I))
      sigma         std of the gaussian likelihood; None -> 1.0. Ignored for classifiers.
      param_filter  None (all parameters), a callable (name, param) -> bool, or a collection of names
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
    import torch

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
        bytes_per_example = sum(p.numel() * p.element_size() for p in selected.values())
        chunk_size = max(1, GRAD_MEMORY_BUDGET // max(1, bytes_per_example))
    gen = _make_generator(seed)
    extract = _extractor(output_fn)

    diff = {n: p.detach() for n, p in selected.items()}
    const = {n: p.detach() for n, p in others.items()}
    acc = {
        n: torch.zeros(
            p.shape,
            device=p.device,
            dtype=torch.float64 if p.dtype == torch.float64 else torch.float32,
        )
        for n, p in selected.items()
    }

    state = _FisherRun(model, mode, sigma, extract, diff, const, acc, method)
    device = next(iter(diff.values())).device
    n_seen = 0
    kind = None
    with _TrainFlags(model):
        for index, raw in enumerate(batches):
            if max_examples is not None and n_seen >= max_examples:
                break
            where = f"{name}: batch {index}"
            inputs, labels = _split_batch(raw, where)
            if mode == "empirical" and labels is None:
                raise ValueError(
                    f"{where}: mode='empirical' needs labels: (x, y) batches or a "
                    f"'{LABEL_KEY}' entry in dict batches"
                )
            size = inputs.size
            if max_examples is not None:
                size = min(size, max_examples - n_seen)
            draw = None  # sampled mode: this batch's one random draw
            for start in range(0, size, chunk_size):
                stop = min(start + chunk_size, size)
                targs, tkwargs = inputs.sliced(start, stop)
                # A forward pass without gradients, only where its output is needed: on the first
                # chunk (to resolve output="auto" and check the labels) and to sample classes from
                # the predictive distribution.
                f = None
                if (n_seen == 0 and start == 0) or (mode == "sampled" and kind == "classifier"):
                    f, from_logits = _forward(model, inputs, targs, tkwargs, output_fn, where)
                    if kind is None:
                        kind = _resolve_output(output, from_logits, f, labels)
                if mode == "empirical":
                    target = labels[start:stop]
                    if f is not None:
                        _check_labels(kind, f, target, where)
                else:
                    if draw is None:
                        if f is None:  # only the output's shape is needed: use one example
                            f, _ = _forward(model, inputs, *inputs.sliced(0, 1), output_fn, where)
                        draw = _draw_targets(kind, f, size, gen)
                    target = draw[start:stop]
                    if kind == "classifier":
                        target = _classes_from_uniform(f, target)
                state.accumulate(inputs, targs, tkwargs, target.to(device), kind, where)
            n_seen += size
    if n_seen == 0:
        raise ValueError(f"{name}: the batches hold no example")
    return {n: a.div_(n_seen) for n, a in acc.items()}



def _check_arguments(name: str, mode: str, output: str, sigma: float | None, max_examples: int | None) -> float:
    """The arguments fisher_diagonal and fisher_column_blocks share; returns sigma (None -> 1)."""
    if mode not in _MODES:
        raise ValueError(f"{name}: mode must be one of {_MODES}, got {mode!r}")
    if output not in _OUTPUTS:
        raise ValueError(f"{name}: output must be one of {_OUTPUTS}, got {output!r}")
    sigma = 1.0 if sigma is None else float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{name}: sigma must be finite and > 0, got {sigma!r}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"{name}: max_examples must be >= 1, got {max_examples!r}")
    return sigma


class _FisherRun:
    """Per-example gradients, squared and summed into ``acc`` - by vmap, or by a loop."""

    def __init__(self, model, mode, sigma, extract, diff, const, acc, method) -> None:
        self.model, self.mode, self.sigma, self.extract = model, mode, sigma, extract
        self.diff, self.const, self.acc, self.method = diff, const, acc, method
        self.use_vmap = method in ("auto", "vmap")

    def _objective(self, kind: str, inputs: _Inputs) -> Callable:
        from torch.func import functional_call

        def objective(params: dict, targs: dict, tkwargs: dict, target: Any) -> Any:
            # One example without its batch dimension: give it back a batch of one.
            args, kwargs = inputs.call_args(
                {i: t.unsqueeze(0) for i, t in targs.items()},
                {k: t.unsqueeze(0) for k, t in tkwargs.items()},
            )
            out = functional_call(self.model, (params, self.const), args, kwargs)
            return _log_likelihood(
                kind, self.mode, self.sigma, self.extract(out), target.unsqueeze(0)
            )

        return objective

    def accumulate(self, inputs, targs, tkwargs, target, kind, where) -> None:
        objective = self._objective(kind, inputs)
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
                    stacklevel=3,
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


# ----------------------------------------------------------------------------------------------
# fisher_column_blocks
# ----------------------------------------------------------------------------------------------


def fisher_column_blocks(
    model: torch.nn.Module,
    batches: Iterable[Any],
    mode: str = "sampled",
    output: str = "auto",
    sigma: float | None = None,
    module_filter: Callable[[str, torch.nn.Module], bool] | Iterable[str] | None = None,
    max_examples: int | None = None,
    *,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    seed: Seed = 0,
    draws: int = 8,
) -> dict[str, torch.Tensor]:
    """Kronecker-factored (K-FAC) column blocks of the Fisher information, for error feedback in
    the quantizers (``nnpress.quantize(..., hessian=H)``): for each weight matrix, a
    ``cols x cols`` matrix H (float64) saying how errors in different columns of one row add up
    in the output distribution.

    With g_p the score's gradient at a layer's output at position p (d log p(y|x) / d output_p,
    one example, y drawn as in :func:`fisher_diagonal`) and x_p the layer's input there:

    - ``nn.Linear`` (weight out x in): ``H = E[ sum_p |g_p|^2 x_p x_p^T ]`` — the input covariance,
      each position weighted by how much the output depends on it (padding positions, whose
      gradient is zero, drop out). Its diagonal approximates the column sums of
      ``fisher_diagonal`` (exactly, when positions do not share the weight's gradient).
    - ``nn.Embedding`` (weight tokens x dim): ``H = E[ sum_p g_p g_p^T ]`` — the covariance of the
      gradient at the embedding's output (e.g. the LayerNorm that usually follows makes errors
      along the all-ones direction invisible, which H shows).

    E is the mean over examples; each batch's output is differentiated ``draws`` times with fresh
    draws of y (sampled mode; "empirical" uses the labels once), which averages the noise of the
    gradient factor. Arguments as in :func:`fisher_diagonal`; ``module_filter``: None (every
    Linear and Embedding), a callable (name, module) -> bool, or a collection of module names.
    Returns ``{"<module name>.weight": H}``. The model runs in eval mode (flags restored), is never
    modified; one forward pass per batch, one backward pass per draw (ordinary autograd, batched:
    examples must not interact, e.g. no batch norm in training mode).

    Surprises: other layer types (convolutions, ...) are not covered. A module called several
    times in one forward pass adds up every call. Modules the output never depended on (never
    called — e.g. ``nn.MultiheadAttention.out_proj``, which its parent bypasses — or unused, like a
    pooler the output ignores) are left out of the result, with a RuntimeWarning naming them: an
    all-zero H would be useless. H from N examples of P positions has rank <= N * P (Linear) or
    N * P * draws (Embedding): damp it before use (``hessian_damp`` of the quantizers). Blocks
    are float64 on the CPU whatever the model's device.
    """
    return _kfac_blocks("fisher_column_blocks", "columns", model, batches, mode, output, sigma, module_filter,
                        max_examples, output_fn, seed, draws)


def fisher_row_blocks(
    model: torch.nn.Module,
    batches: Iterable[Any],
    mode: str = "sampled",
    output: str = "auto",
    sigma: float | None = None,
    module_filter: Callable[[str, torch.nn.Module], bool] | Iterable[str] | None = None,
    max_examples: int | None = None,
    *,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    seed: Seed = 0,
    draws: int = 8,
) -> dict[str, torch.Tensor]:
    """The other Kronecker factor: for each ``nn.Linear`` weight (out x in), the ``out x out``
    row block ``G = E[ sum_p |x_p|^2 g_p g_p^T ]`` (float64; notation of
    :func:`fisher_column_blocks`) — the output-gradient covariance, each position weighted by its
    input's energy. Its diagonal approximates the row sums of ``fisher_diagonal``. For feedback
    across rows: ``nnpress.quantize(..., row_hessian=G)``, ``nnpress.compress(row_hessians=)``.
    Embeddings have no row block here (their rows are tokens). Arguments, sampling, warnings and
    surprises as in :func:`fisher_column_blocks`; the gradient factor needs more draws than the
    column blocks (it is the noisy side).
    """
    return _kfac_blocks("fisher_row_blocks", "rows", model, batches, mode, output, sigma, module_filter,
                        max_examples, output_fn, seed, draws)


def _kfac_blocks(name, side, model, batches, mode, output, sigma, module_filter, max_examples, output_fn, seed,
                 draws) -> dict:
    import torch

    sigma = _check_arguments(name, mode, output, sigma, max_examples)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"{name}: draws must be an int >= 1, got {draws!r}")
    kinds = (torch.nn.Linear, torch.nn.Embedding) if side == "columns" else (torch.nn.Linear,)
    modules = {n: m for n, m in model.named_modules() if isinstance(m, kinds)}
    keep = _keep(modules, module_filter, f"{name}: module_filter (of {'/'.join(k.__name__ for k in kinds)} modules)")
    modules = {n: m for n, m in modules.items() if n in keep}
    if not modules:
        raise ValueError(f"{name}: the model has no (selected) {' or '.join(k.__name__ for k in kinds)} module")
    gen = _make_generator(seed)
    dim = 1 if side == "columns" else 0
    acc = {n: torch.zeros((m.weight.shape[dim], m.weight.shape[dim]), dtype=torch.float64) for n, m in modules.items()}
    seen: dict = {}

    def hook(mod_name):
        def fn(module, args, kwargs, out):  # every call of the module in one forward pass
            if torch.is_grad_enabled() and out.requires_grad:
                x = args[0] if args else kwargs.get("input")
                seen.setdefault(mod_name, []).append((x.detach(), out))
        return fn

    n_seen = 0
    kind = None
    reached: set = set()  # modules whose output the log-likelihood depended on
    handles = [m.register_forward_hook(hook(n), with_kwargs=True) for n, m in modules.items()]
    # The parameters need no gradient; a leaf that requires one makes every layer output part of
    # the graph, so that d ll / d output exists for each hooked module.
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(True)
        with _TrainFlags(model):
            for index, raw in enumerate(batches):
                if max_examples is not None and n_seen >= max_examples:
                    break
                where = f"{name}: batch {index}"
                inputs, labels = _split_batch(raw, where)
                if mode == "empirical" and labels is None:
                    raise ValueError(f"{where}: mode='empirical' needs labels: (x, y) batches or a "
                                     f"'{LABEL_KEY}' entry in dict batches")
                size = inputs.size
                if max_examples is not None and size > max_examples - n_seen:
                    size = max_examples - n_seen
                    targs, tkwargs = inputs.sliced(0, size)
                else:
                    targs, tkwargs = inputs.targs, inputs.tkwargs
                if mode == "empirical":
                    labels = labels[:size]
                args, kwargs = inputs.call_args(targs, tkwargs)
                seen.clear()
                with torch.enable_grad():
                    out = model(*args, **kwargs)
                    f, from_logits = _default_output(out) if output_fn is None else (output_fn(out), False)
                    _check_output(f, size, where)
                    if kind is None:
                        kind = _resolve_output(output, from_logits, f, labels)
                    if mode == "empirical":
                        _check_labels(kind, f, labels, where)
                    calls = [(n, i) for n in modules for i in range(len(seen.get(n, ())))]
                    # Linear: |g_p|^2 summed over the draws first; x_p x_p^T is the same for every draw
                    weight = {c: 0.0 for c in calls
                              if side == "columns" and not isinstance(modules[c[0]], torch.nn.Embedding)}
                    energy = {}  # rows side: |x_p|^2 of each call, the same for every draw
                    if side == "rows":
                        for n, i in calls:
                            x = seen[n][i][0]
                            energy[(n, i)] = x.cpu().double().reshape(-1, x.shape[-1]).square().sum(1, keepdim=True)
                    n_draws = 1 if mode == "empirical" else draws
                    scale = 1.0 / n_draws
                    for d in range(n_draws):
                        if mode == "empirical":
                            target = labels
                        else:
                            target = _draw_targets(kind, f, size, gen).to(f.device)
                            if kind == "classifier":
                                target = _classes_from_uniform(f.detach(), target)
                        ll = _log_likelihood(kind, mode, sigma, f, target)
                        grads = torch.autograd.grad(ll, [seen[n][i][1] for n, i in calls], retain_graph=True,
                                                    allow_unused=True)
                        for (n, i), g in zip(calls, grads):
                            if g is None:
                                continue
                            reached.add(n)
                            g = g.detach().cpu().double().reshape(-1, g.shape[-1])
                            if side == "rows":  # g weighted by the input's energy at its position
                                acc[n] += scale * ((g * energy[(n, i)]).T @ g)
                            elif (n, i) in weight:
                                weight[(n, i)] = weight[(n, i)] + scale * (g * g).sum(1)
                            else:
                                acc[n] += scale * (g.T @ g)
                for (n, i), wp in weight.items():
                    if isinstance(wp, float):  # no draw reached this call
                        continue
                    x = seen[n][i][0]
                    x = x.cpu().double().reshape(-1, x.shape[-1])
                    live = wp > 0  # padding positions carry no weight
                    x, wp = x[live], wp[live]
                    acc[n] += (x * wp.unsqueeze(1)).T @ x
                seen.clear()
                n_seen += size
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        seen.clear()
    if n_seen == 0:
        raise ValueError(f"{name}: the batches hold no example")
    unreached = [n for n in modules if n not in reached]
    if unreached:
        warnings.warn(f"{name}: left out {len(unreached)} module(s) the output never depended on "
                      f"(never called, or unused by the output): {unreached[:5]}", RuntimeWarning, stacklevel=2)
    return {f"{n}.weight": acc[n].div_(n_seen) for n in modules if n in reached}


# ----------------------------------------------------------------------------------------------
# probe_sensitivity
# ----------------------------------------------------------------------------------------------


def _noise_scale(p: Any) -> float:
    """std of the tensor; its RMS if the std is 0 or undefined; 1.0 if the tensor is all zeros."""
    values = p.detach().double()
    std = float(values.std(unbiased=False)) if values.numel() > 1 else 0.0
    if std > 0 and math.isfinite(std):
        return std
    rms = float(values.pow(2).mean().sqrt()) if values.numel() else 0.0
    return rms if rms > 0 and math.isfinite(rms) else 1.0


def probe_sensitivity(
    model: torch.nn.Module,
    inputs: Any,
    param_names: Iterable[str] | None = None,
    rel_noise: float = 0.02,
    n_probes: int = 4,
    *,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    seed: Seed = 0,
) -> dict[str, float]:
    """Data-free output sensitivity of each parameter tensor, for bit allocation without data.

    For each tensor W (one at a time, all others unchanged) and each of ``n_probes`` draws,
    W + rel_noise * scale(W) * N(0, 1) replaces W (via ``torch.func.functional_call``; the model is
    never modified) and the mean squared change of the output over all its elements is measured;
    the average over probes is reported. scale(W) is W's standard deviation (its RMS if the std is 0,
    1.0 if W is all zeros). For small noise this is about (rel_noise*scale)^2 * tr(J_W^T J_W)/n_out,
    J_W = d output / d W: divide by (rel_noise*scale)^2 * W.numel() for a per-weight importance.

    ``inputs``: a tensor (``model(x)``), a tuple/list of positional arguments, or a dict of keyword
    arguments - typically synthetic (random) data. The model runs in eval mode without gradients;
    its train flags are restored. ``param_names``: None for all parameters. Deterministic given
    ``seed`` (int or CPU torch.Generator). Returns {name: float >= 0} in the order of param_names.
    Raises ValueError for unknown names, rel_noise <= 0 or n_probes < 1.
    """
    import torch
    from torch.func import functional_call

    if not (math.isfinite(rel_noise) and rel_noise > 0):
        raise ValueError(f"probe_sensitivity: rel_noise must be finite and > 0, got {rel_noise!r}")
    if n_probes < 1:
        raise ValueError(f"probe_sensitivity: n_probes must be >= 1, got {n_probes!r}")
    params = dict(model.named_parameters())
    names = list(params) if param_names is None else list(param_names)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"probe_sensitivity: the model has no parameters named {unknown}")
    if isinstance(inputs, Mapping):
        args, kwargs = (), dict(inputs)
    elif isinstance(inputs, (tuple, list)):
        args, kwargs = tuple(inputs), {}
    else:
        args, kwargs = (inputs,), {}
    gen = _make_generator(seed)
    extract = _extractor(output_fn)

    result: dict[str, float] = {}
    with _TrainFlags(model), torch.no_grad():
        base = extract(model(*args, **kwargs)).double()
        for name in names:
            p = params[name].detach()
            std = rel_noise * _noise_scale(p)
            total = 0.0
            for _ in range(n_probes):
                noise = torch.randn(p.shape, dtype=torch.float32, generator=gen)
                perturbed = p + (std * noise).to(device=p.device, dtype=p.dtype)
                out = extract(functional_call(model, {name: perturbed}, args, kwargs)).double()
                total += float((out - base).pow(2).mean())
            result[name] = total / n_probes
    return result
