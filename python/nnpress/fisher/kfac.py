"""Kronecker-factored (K-FAC) blocks of the Fisher information, the hessians of the quantizers'
error feedback: for each weight matrix a column block H (``nnpress.quantize(hessian=)``,
``nnpress.compress(hessians=)``) and, for Linear layers, a row block G (``row_hessian=`` /
``row_hessians=``). See :func:`fisher_hessians` and :func:`fisher_row_hessians`.

Importing this module needs only the standard library; torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Union

from .batches import (
    _calibration_batches,
    _check_output,
    _keep,
    _make_generator,
    _output_of,
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


def fisher_hessians(
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
    the quantizers (``nnpress.quantize(..., hessian=H)``, ``nnpress.compress(hessians=)``): for each
    weight matrix, a ``cols x cols`` matrix H (float64) saying how errors in different columns of
    one row add up in the output distribution.

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
    return _kfac_blocks(
        "fisher_hessians",
        "columns",
        model,
        batches,
        mode,
        output,
        sigma,
        module_filter,
        max_examples,
        output_fn,
        seed,
        draws,
    )


def fisher_row_hessians(
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
    :func:`fisher_hessians`) — the output-gradient covariance, each position weighted by its
    input's energy. Its diagonal approximates the row sums of ``fisher_diagonal``. For feedback
    across rows: ``nnpress.quantize(..., row_hessian=G)``, ``nnpress.compress(row_hessians=)``.
    Embeddings have no row block here (their rows are tokens). Arguments, sampling, warnings and
    surprises as in :func:`fisher_hessians`; the gradient factor needs more draws than the
    column blocks (it is the noisy side).
    """
    return _kfac_blocks(
        "fisher_row_hessians",
        "rows",
        model,
        batches,
        mode,
        output,
        sigma,
        module_filter,
        max_examples,
        output_fn,
        seed,
        draws,
    )


def _deprecated_alias(old: str, new: Callable) -> Callable:
    """``new`` under its former name ``old``, warning (DeprecationWarning) at each call."""

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"nnpress.{old} is deprecated and will be removed in the next release; "
            f"use nnpress.{new.__name__} (same arguments and result)",
            DeprecationWarning,
            stacklevel=2,
        )
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`{new.__name__}`; same arguments and result."
    return alias


fisher_column_blocks = _deprecated_alias("fisher_column_blocks", fisher_hessians)
fisher_row_blocks = _deprecated_alias("fisher_row_blocks", fisher_row_hessians)


def _kfac_blocks(
    name,
    side,
    model,
    batches,
    mode,
    output,
    sigma,
    module_filter,
    max_examples,
    output_fn,
    seed,
    draws,
) -> dict:
    """The column (``side="columns"``) or row (``side="rows"``) blocks, divided by the examples."""
    sigma = _check_arguments(name, mode, output, sigma, max_examples)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"{name}: draws must be an int >= 1, got {draws!r}")
    modules = _kfac_modules(name, side, model, module_filter)
    run = _BlockRun(side, modules, mode, output, sigma, output_fn, _make_generator(seed), draws)
    n_seen = 0
    with run.recording(model), _TrainFlags(model):
        for where, inputs, labels, size in _calibration_batches(batches, name, mode, max_examples):
            run.add_batch(model, inputs, labels, size, where)
            n_seen += size
    if n_seen == 0:
        raise ValueError(f"{name}: the batches hold no example")
    unreached = [n for n in modules if n not in run.reached]
    if unreached:
        warnings.warn(
            f"{name}: left out {len(unreached)} module(s) the output never depended on "
            f"(never called, or unused by the output): {unreached[:5]}",
            RuntimeWarning,
            stacklevel=3,
        )  # the caller of fisher_hessians / fisher_row_hessians
    return {f"{n}.weight": run.acc[n].div_(n_seen) for n in modules if n in run.reached}


def _kfac_modules(name: str, side: str, model: Any, module_filter: Any) -> dict:
    """name -> module of the selected layers with a block on ``side``: Linear and Embedding for
    columns, Linear for rows. ValueError if there is none."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Embedding) if side == "columns" else (torch.nn.Linear,)
    modules = {n: m for n, m in model.named_modules() if isinstance(m, kinds)}
    what = f"{name}: module_filter (of {'/'.join(k.__name__ for k in kinds)} modules)"
    keep = _keep(modules, module_filter, what)
    modules = {n: m for n, m in modules.items() if n in keep}
    if not modules:
        raise ValueError(f"{name}: the model has no (selected) {' or '.join(k.__name__ for k in kinds)} module")
    return modules


class _BlockRun:
    """One K-FAC call: forward hooks record each call of a selected module (its input, and its
    output in the graph); each draw's score is differentiated at those outputs and the gradients,
    with the inputs, summed into ``acc`` (module name -> block)."""

    def __init__(self, side, modules, mode, output, sigma, output_fn, gen, draws) -> None:
        import torch

        self.side, self.modules, self.mode, self.output = side, modules, mode, output
        self.sigma, self.output_fn, self.gen = sigma, output_fn, gen
        self.n_draws = 1 if mode == "empirical" else draws
        dim = 1 if side == "columns" else 0
        self.acc = {
            n: torch.zeros((m.weight.shape[dim], m.weight.shape[dim]), dtype=torch.float64) for n, m in modules.items()
        }
        self.seen: dict = {}  # module name -> [(input, output)] of this batch's calls
        self.reached: set = set()  # modules whose output the log-likelihood depended on
        self.kind: str | None = None  # "classifier" or "gaussian", resolved on the first batch

    def _hook(self, mod_name: str) -> Callable:
        import torch

        def fn(module, args, kwargs, out):  # every call of the module in one forward pass
            if torch.is_grad_enabled() and out.requires_grad:
                x = args[0] if args else kwargs.get("input")
                self.seen.setdefault(mod_name, []).append((x.detach(), out))

        return fn

    @contextlib.contextmanager
    def recording(self, model):
        """Hooks on the selected modules and gradients through every layer, for the duration."""
        handles = [m.register_forward_hook(self._hook(n), with_kwargs=True) for n, m in self.modules.items()]
        # The parameters need no gradient; a leaf that requires one makes every layer output part
        # of the graph, so that d ll / d output exists for each hooked module.
        flags = {p: p.requires_grad for p in model.parameters()}
        try:
            for p in flags:
                p.requires_grad_(True)
            yield
        finally:
            for h in handles:
                h.remove()
            for p, flag in flags.items():
                p.requires_grad_(flag)
            self.seen.clear()

    def add_batch(self, model, inputs, labels, size, where) -> None:
        """Add the first ``size`` examples of a batch: one forward pass, one backward per draw."""
        import torch

        if size < inputs.size:
            targs, tkwargs = inputs.sliced(0, size)
        else:
            targs, tkwargs = inputs.targs, inputs.tkwargs
        if self.mode == "empirical":
            labels = labels[:size]
        args, kwargs = inputs.call_args(targs, tkwargs)
        self.seen.clear()
        with torch.enable_grad():
            f = self._forward(model, args, kwargs, labels, size, where)
            calls = [(n, i) for n in self.modules for i in range(len(self.seen.get(n, ())))]
            # Linear columns: |g_p|^2 summed over the draws first, as x_p x_p^T is the same for
            # every draw; rows: |x_p|^2 of each call, the same for every draw.
            weight = {
                c: 0.0
                for c in calls
                if self.side == "columns" and not isinstance(self.modules[c[0]], torch.nn.Embedding)
            }
            energy = self._input_energies(calls) if self.side == "rows" else {}
            scale = 1.0 / self.n_draws
            for _ in range(self.n_draws):
                target = self._target(f, labels, size)
                ll = _log_likelihood(self.kind, self.mode, self.sigma, f, target)
                grads = torch.autograd.grad(
                    ll, [self.seen[n][i][1] for n, i in calls], retain_graph=True, allow_unused=True
                )
                self._add_gradients(calls, grads, weight, energy, scale)
        self._add_weighted_inputs(weight)
        self.seen.clear()

    def _forward(self, model, args, kwargs, labels, size, where) -> Any:
        """The output of a forward pass with gradients (the hooks record the calls); resolves the
        likelihood kind on the first batch and checks empirical labels."""
        f, from_logits = _output_of(model(*args, **kwargs), self.output_fn)
        _check_output(f, size, where)
        if self.kind is None:
            self.kind = _resolve_output(self.output, from_logits, f, labels)
        if self.mode == "empirical":
            _check_labels(self.kind, f, labels, where)
        return f

    def _target(self, f, labels, size) -> Any:
        """y of one draw: the labels (empirical), or a fresh draw from the model's distribution."""
        if self.mode == "empirical":
            return labels
        target = _draw_targets(self.kind, f, size, self.gen).to(f.device)
        if self.kind == "classifier":
            target = _classes_from_uniform(f.detach(), target)
        return target

    def _input_energies(self, calls) -> dict:
        """|x_p|^2 per position of each call's input, (positions, 1) float64 on the CPU."""
        energy = {}
        for n, i in calls:
            x = self.seen[n][i][0]
            energy[(n, i)] = x.cpu().double().reshape(-1, x.shape[-1]).square().sum(1, keepdim=True)
        return energy

    def _add_gradients(self, calls, grads, weight, energy, scale) -> None:
        """One draw's output gradients: into the row blocks (weighted by the input energies), the
        Embedding column blocks, or the Linear columns' position weights."""
        for (n, i), g in zip(calls, grads):
            if g is None:
                continue
            self.reached.add(n)
            g = g.detach().cpu().double().reshape(-1, g.shape[-1])
            if self.side == "rows":  # g weighted by the input's energy at its position
                self.acc[n] += scale * ((g * energy[(n, i)]).T @ g)
            elif (n, i) in weight:
                weight[(n, i)] = weight[(n, i)] + scale * (g * g).sum(1)
            else:
                self.acc[n] += scale * (g.T @ g)

    def _add_weighted_inputs(self, weight) -> None:
        """Linear column blocks: each call's input outer products, weighted per position."""
        for (n, i), wp in weight.items():
            if isinstance(wp, float):  # no draw reached this call
                continue
            x = self.seen[n][i][0]
            x = x.cpu().double().reshape(-1, x.shape[-1])
            live = wp > 0  # padding positions carry no weight
            x, wp = x[live], wp[live]
            self.acc[n] += (x * wp.unsqueeze(1)).T @ x
