"""The calibration protocol shared by the Fisher estimators and the probe: what a batch, a model
output and a label may be, and how the model is run on them.

- Batches: an iterable of ``x`` (a tensor: ``model(x)``), ``(x,)`` or ``(x, y)`` tuples (``x`` a
  tensor, a tuple of tensors for several positional arguments, or a dict of keyword arguments), or
  dicts of keyword arguments (``model(**batch)``; the key ``"labels"``, if present, is taken out and
  used as y). Every tensor input and label must have the batch on dimension 0; non-tensor values are
  passed through unchanged.
- Model outputs: a tensor; an object or dict with ``logits``, else ``last_hidden_state``; or a
  tuple/list (its first element). ``output_fn(model_output) -> tensor (B, ...)`` overrides this.
- ``max_examples`` cuts the batch that crosses it.
- The model runs in eval mode (dropout off, batch norm on running statistics) - the model as it will
  be deployed; each module's train/eval flag is restored afterwards.
- Randomness comes only from ``seed``: an int or a ``torch.Generator`` on the CPU.

Importing this module needs only the standard library; torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

LABEL_KEY = "labels"  # key of the labels in dict batches (the Hugging Face convention)


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
                f"{where}: labels of shape {tuple(labels.shape)} do not match the batch size {inputs.size}"
            )
    return inputs, labels


def _calibration_batches(
    batches: Iterable[Any], name: str, mode: str, max_examples: int | None
) -> Iterator[tuple[str, _Inputs, Any, int]]:
    """(where, inputs, labels or None, size) per batch, ``size`` the examples to use from its start:
    the batch's size, cut so that the sizes add up to at most ``max_examples``. Stops at the batch
    after the one that reaches ``max_examples``. Empirical mode needs labels (ValueError)."""
    n_seen = 0
    for index, raw in enumerate(batches):
        if max_examples is not None and n_seen >= max_examples:
            break
        where = f"{name}: batch {index}"
        inputs, labels = _split_batch(raw, where)
        if mode == "empirical" and labels is None:
            raise ValueError(
                f"{where}: mode='empirical' needs labels: (x, y) batches or a '{LABEL_KEY}' entry in dict batches"
            )
        size = inputs.size
        if max_examples is not None:
            size = min(size, max_examples - n_seen)
        yield where, inputs, labels, size
        n_seen += size


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


def _output_of(out: Any, output_fn: Callable | None) -> tuple[Any, bool]:
    """(output tensor, came_from_logits) of a model output, through ``output_fn`` if given."""
    return _default_output(out) if output_fn is None else (output_fn(out), False)


def _check_output(f: Any, batch_size: int, where: str) -> None:
    import torch

    if not isinstance(f, torch.Tensor) or not f.is_floating_point():
        raise TypeError(f"{where}: the model output must be a floating-point tensor, got {f!r:.80}")
    if f.dim() == 0 or f.shape[0] != batch_size:
        raise ValueError(
            f"{where}: the model output of shape {tuple(f.shape)} has no batch dimension of size {batch_size} first"
        )


def _forward(model: Any, inputs: _Inputs, targs: dict, tkwargs: dict, output_fn: Any, where: str) -> tuple[Any, bool]:
    """(output tensor, came_from_logits) of a batched forward pass without gradients."""
    import torch

    args, kwargs = inputs.call_args(targs, tkwargs)
    with torch.no_grad():
        f, from_logits = _output_of(model(*args, **kwargs), output_fn)
    _check_output(f, next(iter({**targs, **tkwargs}.values())).shape[0], where)
    return f, from_logits


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
