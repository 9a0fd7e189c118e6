"""A data-free sensitivity probe: how much the output moves when one parameter tensor is perturbed
with Gaussian noise - for bit allocation when no calibration data exists. See
:func:`probe_sensitivity`.

Importing this module needs only the standard library; torch is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Union

from .batches import _extractor, _make_generator, _TrainFlags

if TYPE_CHECKING:  # pragma: no cover
    import torch

    Seed = Union[int, torch.Generator]


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
    the average over probes is reported. scale(W) is the spread of W's bulk (``_noise_scale``: the
    robust spread of ``nnpress.config.spread_of``; W's RMS if that is 0, 1.0 if W is all zeros).
    For small noise this is about (rel_noise*scale)^2 * tr(J_W^T J_W)/n_out, J_W = d output / d W:
    divide by (rel_noise*scale)^2 * W.numel() for a per-weight importance.

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
    args, kwargs = _call_args(inputs)
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


def _call_args(inputs: Any) -> tuple[tuple, dict]:
    """(args, kwargs) of the model call: a dict is keyword arguments, a tuple/list positional
    arguments, anything else the one positional argument."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def _noise_scale(p: Any) -> float:
    """The spread of the tensor's bulk (``nnpress.config.spread_of``, "robust": a few outliers do
    not make the noise swamp the other weights); its RMS if that is 0 or undefined; 1.0 if the
    tensor is all zeros."""
    from ..config import spread_of

    values = p.detach().double()
    s = spread_of(values.cpu().numpy(), "robust") if values.numel() > 1 else 0.0
    if s > 0 and math.isfinite(s):
        return s
    rms = float(values.pow(2).mean().sqrt()) if values.numel() else 0.0
    return rms if rms > 0 and math.isfinite(rms) else 1.0


# Synthetic inputs of the data-free probe that ``compress`` runs on an ``nn.Module`` source.
SYNTHETIC_BATCH = 8  # inputs per probe batch
SYNTHETIC_TOKENS = 32  # sequence length of synthetic token ids
SYNTHETIC_IMAGE = 32  # height and width (and length, depth) of synthetic images, tried first
# sizes tried after SYNTHETIC_IMAGE, in order, for a model that does not run on it (a classifier
# head fixes the input size)
SYNTHETIC_IMAGE_SIZES = (8, 16, 28, 64, 224)


def synthetic_inputs(model: torch.nn.Module, seed: int = 0, batch: int = SYNTHETIC_BATCH) -> Any | None:
    """Random inputs the model runs on, or None when none can be built or the model fails on them.

    Built from the model's first parameterised module (in registration order): an ``Embedding``
    (or a model with ``config.vocab_size``, as transformers models have) gets token ids drawn
    uniformly from the vocabulary, ``batch`` x ``SYNTHETIC_TOKENS``, passed as
    ``input_ids`` (with an all-ones ``attention_mask``) when ``forward`` takes that argument; a
    ``Linear`` gets standard normal vectors of its ``in_features``; a ``ConvNd`` standard normal
    inputs of its channels and ``SYNTHETIC_IMAGE`` per spatial axis, or the first size of
    ``SYNTHETIC_IMAGE_SIZES`` the model runs on. The model is run once on them
    (eval mode, no gradients, train flags restored) and must return a floating-point tensor
    (``output_fn_for``). ``batch``: inputs in the batch (``SYNTHETIC_BATCH`` by default).
    Deterministic given ``seed`` and ``batch``; ValueError for a batch < 1.
    """
    import inspect

    import torch
    from torch import nn

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"synthetic_inputs: batch must be an int >= 1, got {batch!r}")
    first = next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    candidates = []  # callables generator -> inputs, tried in order
    if isinstance(first, nn.Embedding) or isinstance(vocab, int):
        n = vocab if isinstance(vocab, int) else first.num_embeddings
        try:
            takes_ids = "input_ids" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            takes_ids = False

        def tokens(gen):
            ids = torch.randint(0, n, (batch, SYNTHETIC_TOKENS), generator=gen)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if takes_ids else ids

        candidates.append(tokens)
    elif isinstance(first, nn.Linear):
        candidates.append(lambda gen: torch.randn(batch, first.in_features, generator=gen))
    elif isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
        for size in (SYNTHETIC_IMAGE,) + SYNTHETIC_IMAGE_SIZES:
            candidates.append(
                lambda gen, size=size: torch.randn(batch, first.in_channels, *(size,) * dims, generator=gen)
            )
    for make in candidates:
        inputs = make(_make_generator(seed))
        args, kwargs = _call_args(inputs)
        try:
            with _TrainFlags(model), torch.no_grad():
                _float_outputs(model(*args, **kwargs))
        except Exception:  # a model that does not run on these inputs is compressed without the probe
            continue
        return inputs
    return None


def _float_outputs(out: Any) -> list:
    """Every floating-point tensor with a batch dimension in a model output (a tensor, a mapping
    such as transformers' ``ModelOutput``, or a tuple/list, nested), in order."""
    import torch

    found: list = []

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            if o.is_floating_point() and o.dim() >= 1:
                found.append(o)
        elif isinstance(o, Mapping):
            for v in o.values():
                walk(v)
        elif isinstance(o, (tuple, list)):
            for v in o:
                walk(v)

    walk(out)
    if not found:
        raise TypeError(f"the model output ({type(out).__name__}) holds no floating-point tensor")
    return [t for t in found if t.shape[0] == found[0].shape[0]]


def output_fn_for(model: torch.nn.Module, inputs: Any) -> Callable[[Any], torch.Tensor]:
    """An ``output_fn`` for :func:`probe_sensitivity` that sees the whole output: every
    floating-point tensor of it (``_float_outputs``), each flattened per batch row and divided by
    its RMS on ``inputs`` with the model unchanged, side by side. The probe's mean squared change
    then weighs every output element by its change relative to its own tensor's scale (a
    transformers encoder's ``pooler_output`` counts, not only ``last_hidden_state``)."""
    import torch

    args, kwargs = _call_args(inputs)
    with _TrainFlags(model), torch.no_grad():
        base = _float_outputs(model(*args, **kwargs))
    scales = []
    for t in base:
        rms = float(t.double().pow(2).mean().sqrt())
        scales.append(rms if rms > 0 and math.isfinite(rms) else 1.0)

    def fn(out: Any) -> torch.Tensor:
        parts = _float_outputs(out)
        return torch.cat([t.reshape(t.shape[0], -1).double() / s for t, s in zip(parts, scales)], dim=1)

    return fn
