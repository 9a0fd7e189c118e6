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
    """std of the tensor; its RMS if the std is 0 or undefined; 1.0 if the tensor is all zeros."""
    values = p.detach().double()
    std = float(values.std(unbiased=False)) if values.numel() > 1 else 0.0
    if std > 0 and math.isfinite(std):
        return std
    rms = float(values.pow(2).mean().sqrt()) if values.numel() else 0.0
    return rms if rms > 0 and math.isfinite(rms) else 1.0
