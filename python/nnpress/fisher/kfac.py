"""Kronecker-factored (K-FAC) blocks of the Fisher information, the hessians of the quantizers'
error feedback: for each weight matrix a column block H (``nnpress.quantize(hessian=)``,
``nnpress.compress(hessians=)``) and, for Linear layers, a row block G (``row_hessian=`` /
``row_hessians=``). See :func:`fisher_hessians` and :func:`fisher_row_hessians`, and
:func:`fisher_kfac_blocks` for both from one pass.

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
    modified; one forward pass per batch, and the draws' backward passes batched together
    (``torch.autograd.grad(..., is_grads_batched=True)``, in groups bounded in memory; one draw at
    a time if the model's operations cannot be batched that way). Ordinary autograd, batched over
    examples: examples must not interact (e.g. no batch norm in training mode).

    Surprises: other layer types (convolutions, ...) are not covered. A module called several
    times in one forward pass adds up every call. Modules the output never depended on (never
    called — e.g. ``nn.MultiheadAttention.out_proj``, which its parent bypasses — or unused, like a
    pooler the output ignores) are left out of the result, with a RuntimeWarning naming them: an
    all-zero H would be useless. H from N examples of P positions has rank <= N * P (Linear) or
    N * P * draws (Embedding): damp it before use (``hessian_damp`` of the quantizers). Blocks
    are float64 on the CPU whatever the model's device.
    """
    return _kfac_blocks(
        "fisher_hessians", {"columns": module_filter}, model, batches, mode, output, sigma, max_examples, output_fn,
        seed, draws,
    )["columns"]  # fmt: skip


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
        "fisher_row_hessians", {"rows": module_filter}, model, batches, mode, output, sigma, max_examples, output_fn,
        seed, draws,
    )["rows"]  # fmt: skip


def fisher_kfac_blocks(
    model: torch.nn.Module,
    batches: Iterable[Any],
    mode: str = "sampled",
    output: str = "auto",
    sigma: float | None = None,
    max_examples: int | None = None,
    *,
    columns: Callable[[str, torch.nn.Module], bool] | Iterable[str] | None = None,
    rows: Callable[[str, torch.nn.Module], bool] | Iterable[str] | None = None,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    seed: Seed = 0,
    draws: int = 8,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(fisher_hessians(..., module_filter=columns), fisher_row_hessians(..., module_filter=rows))``
    from one pass over the batches: one forward pass per batch and one set of draws, whose output
    gradients feed both the column and the row blocks (the separate calls with the same ``seed``
    make the same draws, so the results are the same). ``columns`` / ``rows``: the module filter of
    each side (None: every eligible module); an empty collection leaves that side empty (``{}``),
    but some module must be selected on one side. Other arguments, warnings and surprises as in
    :func:`fisher_hessians`.
    """
    blocks = _kfac_blocks(
        "fisher_kfac_blocks", {"columns": columns, "rows": rows}, model, batches, mode, output, sigma, max_examples,
        output_fn, seed, draws,
    )  # fmt: skip
    return blocks["columns"], blocks["rows"]


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
    filters,
    model,
    batches,
    mode,
    output,
    sigma,
    max_examples,
    output_fn,
    seed,
    draws,
) -> dict:
    """The blocks of each side in ``filters`` ("columns" and/or "rows" -> module filter), divided
    by the examples, from one pass over the batches: ``{side: {"<module>.weight": block}}``. A
    side whose filter is an empty collection gets no module (``{}``) when another side has some."""
    sigma = _check_arguments(name, mode, output, sigma, max_examples)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"{name}: draws must be an int >= 1, got {draws!r}")
    sides = {side: _kfac_modules(name, side, model, flt, len(filters) > 1) for side, flt in filters.items()}
    if not any(sides.values()):
        raise ValueError(f"{name}: the model has no (selected) Linear or Embedding module")
    run = _BlockRun(sides, mode, output, sigma, output_fn, _make_generator(seed), draws)
    n_seen = 0
    with run.recording(model), _TrainFlags(model):
        for where, inputs, labels, size in _calibration_batches(batches, name, mode, max_examples):
            run.add_batch(model, inputs, labels, size, where)
            n_seen += size
    if n_seen == 0:
        raise ValueError(f"{name}: the batches hold no example")
    unreached = [n for n in run.modules if n not in run.reached]
    if unreached:
        warnings.warn(
            f"{name}: left out {len(unreached)} module(s) the output never depended on "
            f"(never called, or unused by the output): {unreached[:5]}",
            RuntimeWarning,
            stacklevel=3,
        )  # the caller of fisher_hessians / fisher_row_hessians / fisher_kfac_blocks
    return {
        side: {f"{n}.weight": run.acc[side][n].div_(n_seen) for n in mods if n in run.reached}
        for side, mods in sides.items()
    }


def _kfac_modules(name: str, side: str, model: Any, module_filter: Any, may_be_empty: bool = False) -> dict:
    """name -> module of the selected layers with a block on ``side``: Linear and Embedding for
    columns, Linear for rows. ValueError if there is none, unless ``may_be_empty`` and the filter
    is an empty collection."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Embedding) if side == "columns" else (torch.nn.Linear,)
    modules = {n: m for n, m in model.named_modules() if isinstance(m, kinds)}
    what = f"{name}: {side if may_be_empty else 'module_filter'} (of {'/'.join(k.__name__ for k in kinds)} modules)"
    keep = _keep(modules, module_filter, what)
    modules = {n: m for n, m in modules.items() if n in keep}
    empty_ok = may_be_empty and module_filter is not None and not callable(module_filter) and not keep
    if not modules and not empty_ok:
        raise ValueError(
            f"{name}: the model has no (selected) {' or '.join(k.__name__ for k in kinds)} module"
            + (f" for the {side} blocks" if may_be_empty else "")
        )
    return modules


# Draws whose output gradients one batched backward pass computes: at most this many elements of
# the recorded layer outputs times draws (the gradients of every draw are held at once).
DRAW_BATCH_ELEMENTS = 1 << 25


class _BlockRun:
    """One K-FAC call: forward hooks record each call of a selected module (its input, and its
    output in the graph); the draws' scores are differentiated at those outputs and the gradients,
    with the inputs, summed into ``acc`` (side -> module name -> block).

    The score of a draw depends on the batch only through the model output f, so its gradient at a
    layer output is the backward pass (linear) of d log p / d f: that is computed at f for each
    draw first, and the draws are backpropagated together (``is_grads_batched``), in groups of at most
    ``DRAW_BATCH_ELEMENTS`` gradient elements; one draw at a time if batching is not supported."""

    def __init__(self, sides, mode, output, sigma, output_fn, gen, draws) -> None:
        import torch

        self.mode, self.output = mode, output
        self.sigma, self.output_fn, self.gen = sigma, output_fn, gen
        self.n_draws = 1 if mode == "empirical" else draws
        self.rows = dict(sides.get("rows", {}))
        self.cols = dict(sides.get("columns", {}))
        self.modules = {**self.cols, **self.rows}
        self.acc = {
            side: {
                n: torch.zeros((m.weight.shape[dim], m.weight.shape[dim]), dtype=torch.float64) for n, m in mods.items()
            }
            for side, dim, mods in (("columns", 1, self.cols), ("rows", 0, self.rows))
            if side in sides
        }
        self.seen: dict = {}  # module name -> [(input, output)] of this batch's calls
        self.reached: set = set()  # modules whose output the log-likelihood depended on
        self.kind: str | None = None  # "classifier" or "gaussian", resolved on the first batch
        self.batched = True  # cleared when the autograd of the model cannot batch the draws

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
        """Add the first ``size`` examples of a batch: one forward pass, the draws' backward passes."""
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
            outs = [self.seen[n][i][1] for n, i in calls]
            # Linear columns: |g_p|^2 summed over the draws first, as x_p x_p^T is the same for
            # every draw; rows: |x_p|^2 of each call, the same for every draw.
            weight = {
                c: 0.0 for c in calls if c[0] in self.cols and not isinstance(self.cols[c[0]], torch.nn.Embedding)
            }
            energy = self._input_energies([c for c in calls if c[0] in self.rows])
            dfs = [self._score_at_output(f, labels, size) for _ in range(self.n_draws)]  # the draws, in order
            group = max(1, DRAW_BATCH_ELEMENTS // max(1, sum(o.numel() for o in outs)))
            scale = 1.0 / self.n_draws
            start = 0
            while start < len(dfs):
                chunk = dfs[start : start + group] if self.batched else dfs[start : start + 1]
                last = start + len(chunk) >= len(dfs)
                grads = self._backward(f, outs, chunk, retain=not last)
                self._add_gradients(calls, grads, weight, energy, scale)
                start += len(chunk)
        self._add_weighted_inputs(weight)
        self.seen.clear()

    def _backward(self, f, outs, chunk, retain) -> tuple:
        """The gradients at ``outs`` of the draws whose d log p / d f are ``chunk``: each
        (draws, *out.shape), or None where the output did not depend on that layer."""
        import torch

        if len(chunk) > 1:
            try:
                return torch.autograd.grad(
                    [f], outs, grad_outputs=[torch.stack(chunk)], retain_graph=True, allow_unused=True,
                    is_grads_batched=True,
                )  # fmt: skip
            except RuntimeError:
                self.batched = False  # some operation of the model has no batched backward
            return tuple(
                None if gs[0] is None else torch.stack(gs)
                for gs in zip(*(self._backward(f, outs, [s], True) for s in chunk))
            )
        grads = torch.autograd.grad([f], outs, grad_outputs=[chunk[0]], retain_graph=retain, allow_unused=True)
        return tuple(None if g is None else g.unsqueeze(0) for g in grads)

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

    def _score_at_output(self, f, labels, size) -> Any:
        """d log p(y|x) / d f of one draw (y: the labels, or a fresh draw from the model)."""
        import torch

        if self.mode == "empirical":
            target = labels
        else:
            target = _draw_targets(self.kind, f, size, self.gen).to(f.device)
            if self.kind == "classifier":
                target = _classes_from_uniform(f.detach(), target)
        fd = f.detach().requires_grad_(True)
        (df,) = torch.autograd.grad(_log_likelihood(self.kind, self.mode, self.sigma, fd, target), [fd])
        return df

    def _input_energies(self, calls) -> dict:
        """|x_p|^2 per position of each call's input, (positions, 1) float64 on the CPU."""
        energy = {}
        for n, i in calls:
            x = self.seen[n][i][0]
            x = x.cpu().double().reshape(-1, x.shape[-1])
            energy[(n, i)] = x.square().sum(1, keepdim=True)
        return energy

    def _add_gradients(self, calls, grads, weight, energy, scale) -> None:
        """Some draws' output gradients (draws first): into the row blocks (weighted by the input
        energies), the Embedding column blocks, or the Linear columns' position weights. Positions
        whose gradient is zero (e.g. padding) add nothing and are dropped before the products."""
        for (n, i), g in zip(calls, grads):
            if g is None:
                continue
            self.reached.add(n)
            k = g.shape[0]
            g = g.detach().cpu().double().reshape(-1, g.shape[-1])  # (draws x positions, out)
            norm = (g * g).sum(1)
            live = norm > 0
            if (n, i) in weight:  # Linear columns: |g_p|^2 summed over the draws, per position
                weight[(n, i)] = weight[(n, i)] + scale * norm.reshape(k, -1).sum(0)
            if n in self.rows:  # g weighted by the input's energy at its position
                e = energy[(n, i)].repeat(k, 1)[live]
                gl = g[live]
                self.acc["rows"][n] += scale * ((gl * e).T @ gl)
            if n in self.cols and (n, i) not in weight:  # Embedding columns
                gl = g[live]
                self.acc["columns"][n] += scale * (gl.T @ gl)

    def _add_weighted_inputs(self, weight) -> None:
        """Linear column blocks: each call's input outer products, weighted per position."""
        for (n, i), wp in weight.items():
            if isinstance(wp, float):  # no draw reached this call
                continue
            x = self.seen[n][i][0]
            x = x.cpu().double().reshape(-1, x.shape[-1])
            live = wp > 0  # padding positions carry no weight
            x, wp = x[live], wp[live]
            self.acc["columns"][n] += (x * wp.unsqueeze(1)).T @ x
