"""The log-likelihood the Fisher estimators differentiate, and the draws of y in sampled mode.

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
- Randomness (sampled mode) comes only from ``seed``, so the result is deterministic. Per batch of B
  examples, before any gradient, exactly one draw is made:
  classifier: ``u = torch.rand((B, *logits.shape[1:-1]), dtype=float64, generator=g)`` and
  y = the first class whose cumulative softmax probability (float64) exceeds u;
  gaussian: ``eps = torch.randn(f.shape, dtype=float32, generator=g)`` and y = f + sigma * eps.
  The result therefore does not depend on how a batch is cut into chunks. A batch cut by
  ``max_examples`` draws its noise with the kept size.

Importing this module needs only the standard library; torch is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import Any

IGNORE_INDEX = -100  # empirical classifier labels with this value contribute nothing

_MODES = ("sampled", "empirical")
_OUTPUTS = ("auto", "classifier", "gaussian")


def _check_arguments(name: str, mode: str, output: str, sigma: float | None, max_examples: int | None) -> float:
    """The arguments every Fisher estimator takes; returns sigma (None -> 1)."""
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


def _resolve_output(output: str, from_logits: bool, f: Any, labels: Any) -> str:
    """The likelihood kind, "classifier" or "gaussian", that ``output="auto"`` stands for."""
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
            raise TypeError(f"{where}: classifier labels must be integer class indices, got {labels.dtype}")
        if tuple(labels.shape) != tuple(f.shape[:-1]):
            raise ValueError(
                f"{where}: classifier labels of shape {tuple(labels.shape)} do not match logits "
                f"of shape {tuple(f.shape)} (expected {tuple(f.shape[:-1])})"
            )
    elif tuple(labels.shape) != tuple(f.shape):
        raise ValueError(
            f"{where}: gaussian targets of shape {tuple(labels.shape)} do not match the output shape {tuple(f.shape)}"
        )


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
    """The classes drawn by uniforms ``u`` from the softmax of logits ``f``."""
    import torch

    cdf = torch.softmax(f.double(), dim=-1).cumsum(-1)
    y = (cdf < u.to(cdf.device).unsqueeze(-1)).sum(-1)
    return y.clamp_(max=f.shape[-1] - 1)
