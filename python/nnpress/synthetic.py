"""Data-free error feedback: K-FAC column blocks estimated on synthetic inputs (no user data).

``compress`` with ``CodecConfig(synthetic_feedback=True)`` (opt-in) and an ``nn.Module`` source
that runs on synthetic inputs calls :func:`synthetic_hessians`: the model is run on
``SYNTHETIC_BATCHES`` batches of random inputs (``nnpress.fisher.probe.synthetic_inputs`` with
seeds 0, 1, ...: token ids drawn uniformly from the vocabulary; text models only — a model whose
first layer takes vectors or images gets no blocks, as random vectors and images are unlike data
(bounded, correlated pixels, borders constant across a data set) and feedback fitted to them moved
errors onto inputs that real data holds constant: bench/RESULTS.md), and the Kronecker-factored
column blocks of the Fisher of its whole output (``fisher.kfac.fisher_kfac_blocks``, Gaussian likelihood on every
floating-point output tensor scaled to unit RMS, ``fisher.probe.output_fn_for``;
``SYNTHETIC_DRAWS`` draws per batch) are estimated for its ``nn.Linear`` and ``nn.Embedding``
weights: for a Linear the covariance of its inputs weighted by the output gradient, for an
Embedding the covariance of the gradient at its output. These are the blocks the calibrated
pipeline (``nnpress.budget``) estimates on real data; here they come from inputs nobody supplied,
so they are only as good as the synthetic activations are like real ones. What they capture
without data: which input features of a layer are large and correlated (transformers' LayerNorm
outputs have outlier dimensions whatever the tokens), and which directions the next LayerNorm
makes invisible. The encode path then quantizes those tensors with error feedback
(``quant.feedback_inputs``, damped by ``CodecConfig.hessian_damp``) and makes their rule-4 steps
``FEEDBACK_STEP_RATIO`` coarser (``config`` module docstring, "Synthetic feedback").

Which weights get a block: the bounded rule of the calibrated pipeline
(``budget._eligible_blocks``: at most ``FEEDBACK_MAX_COLS`` columns, rows x cols^2 work and
total block memory bounded), among the tensors whose step rule 4 sets; blocks without curvature
(a layer the output does not depend on) are dropped. Convolutions get none.

A Hugging Face model folder (``nnpress compress <folder> out.nnp``) is a module too, when it can
be loaded and run: :func:`folder_model` loads it as ``nnpress.sources.load_task`` does for
calibration, with ``SYNTHETIC_TEXTS`` synthetic texts instead of the user's (each
``SYNTHETIC_TEXT_TOKENS`` token ids drawn uniformly from the folder's tokenizer vocabulary, special
tokens excluded, decoded to text; the tokenizer adds its own special tokens), so the blocks see the
model as a user runs it (a sentence-transformers folder's pooling included), and the file keeps
the checkpoint's names and dtypes. Folders whose weight files exceed ``SYNTHETIC_MAX_BYTES`` (the
model is loaded in float32) or that cannot be loaded are streamed without feedback, as before.

Deterministic (fixed seeds, CPU float64 accumulation). None — and the encode falls back to the
rules without feedback — when the source is not a module (a state_dict, a file: nothing to run),
when no synthetic input fits the model, or when the estimation fails on it.

Importing this module needs only numpy; torch is imported inside the functions.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import CodecConfig
from .traverse import TensorEntry

__all__ = [
    "SYNTHETIC_BATCHES",
    "SYNTHETIC_DRAWS",
    "FolderModel",
    "folder_model",
    "synthetic_batches",
    "synthetic_hessians",
    "synthetic_texts",
]

SYNTHETIC_BATCHES = 8  # batches of synthetic inputs the blocks are estimated on
SYNTHETIC_BATCH_SIZE = 16  # inputs per batch
SYNTHETIC_DRAWS = 2  # draws of the Gaussian target per batch (the output-gradient side)
SYNTHETIC_TEXTS = SYNTHETIC_BATCHES * SYNTHETIC_BATCH_SIZE  # synthetic texts for a model folder
SYNTHETIC_TEXT_TOKENS = 30  # token ids per synthetic text
SYNTHETIC_MAX_BYTES = 1 << 31  # model folders with more weight bytes are streamed without feedback
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class FolderModel:
    """A model folder loaded to run (:func:`folder_model`): the tensors the file stores (by file
    name), the module, module name -> file name, the synthetic batches and the output's likelihood."""

    state: dict
    model: Any
    names: dict
    batches: list
    output_fn: Callable[[Any], Any]
    output: str


def synthetic_texts(tokenizer, n: int = SYNTHETIC_TEXTS, tokens: int = SYNTHETIC_TEXT_TOKENS, seed: int = 0):
    """``n`` texts of ``tokens`` token ids each, drawn uniformly from the tokenizer's vocabulary
    without its special tokens, decoded (deterministic given ``seed``)."""
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    pool = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)
    if pool.size == 0:
        raise ValueError("the tokenizer has no ordinary token")
    ids = np.random.default_rng(seed).choice(pool, size=(n, tokens))
    return [tokenizer.decode([int(i) for i in row]) for row in ids]


def _weight_bytes(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.lower().endswith(WEIGHT_SUFFIXES))
    return total


def folder_model(path, config: CodecConfig) -> FolderModel | None:
    """A Hugging Face model folder loaded to run on synthetic texts (module docstring), or None:
    ``config.synthetic_feedback`` off, not a folder with ``config.json`` and a tokenizer, weights
    above ``SYNTHETIC_MAX_BYTES``, or a model that cannot be loaded or run (``transformers``
    missing, an unknown architecture...)."""
    if not config.synthetic_feedback or not isinstance(path, (str, os.PathLike)):
        return None
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        return None
    try:
        from .sources import _load_tokenizer, _st_layout, load_task

        st = _st_layout(folder)
        model_dir = st["path"] if st else folder
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            return None
        if _weight_bytes(folder) > SYNTHETIC_MAX_BYTES:
            return None
        texts = synthetic_texts(_load_tokenizer(model_dir))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            task = load_task(folder, texts, heldout=1, max_samples=None, batch_size=SYNTHETIC_BATCH_SIZE)
    except (ImportError, OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None
    return FolderModel(task.state_dict(), task.model, dict(task.names), task.fit, task.output_fn, task.fisher_output)


def synthetic_batches(model, n_batches: int = SYNTHETIC_BATCHES, batch_size: int = SYNTHETIC_BATCH_SIZE):
    """``n_batches`` batches of synthetic inputs of ``model`` (``synthetic_inputs`` with seeds 0, 1,
    ...), or None when the model does not run on synthetic inputs."""
    from .fisher.probe import synthetic_inputs

    out = []
    for i in range(n_batches):
        b = synthetic_inputs(model, seed=i, batch=batch_size)
        if b is None:
            return None
        out.append(b)
    return out


def _token_ids(inputs) -> bool:
    """Whether synthetic inputs are token ids (a text model): the only inputs whose activations
    past the first layer the model makes from its own tables. Random vectors or images are unlike
    data (pixels are bounded, correlated, constant at the borders), and feedback fitted to them
    moves errors onto the inputs that real data holds constant."""
    x = inputs.get("input_ids") if isinstance(inputs, Mapping) else inputs
    return hasattr(x, "is_floating_point") and not x.is_floating_point()


def _is_module(source) -> bool:
    return hasattr(source, "named_modules") and hasattr(source, "forward") and hasattr(source, "state_dict")


def synthetic_hessians(
    source,
    entries: Sequence[TensorEntry],
    config: CodecConfig,
    names: Mapping[str, str] | None = None,
    *,
    batches: list | None = None,
    output_fn: Callable[[Any], Any] | None = None,
    output: str = "gaussian",
) -> dict[str, np.ndarray] | None:
    """``{file name: column block (float64)}`` for the rule-4 Linear/Embedding weights of an
    ``nn.Module`` source (or a :class:`FolderModel`), estimated on synthetic inputs (module
    docstring); None when ``config.synthetic_feedback`` is off, the source is not a module, it does
    not run on synthetic inputs, or no weight gets a block. ``names``: module tensor name -> name
    in ``entries`` (default: the same). ``batches``/``output_fn``/``output``: the inputs and the
    likelihood of the output (default: ``synthetic_batches``, every float output at unit RMS,
    Gaussian)."""
    if isinstance(source, FolderModel):
        return synthetic_hessians(
            source.model, entries, config, source.names, batches=source.batches, output_fn=source.output_fn,
            output=source.output,
        )  # fmt: skip
    if not config.synthetic_feedback or not _is_module(source):
        return None
    import torch

    from .budget import _eligible_blocks
    from .fisher.kfac import fisher_kfac_blocks
    from .fisher.probe import output_fn_for
    from .quant import has_curvature

    names = dict(names or {})

    def file_name(module_name: str) -> str:
        return names.get(module_name, module_name)

    rule4 = {
        e.name
        for e in entries
        if e.alias_of is None and e.count and len(e.shape) == 2 and config.by_rule4(e.name, e.role, e.dtype)
    }
    if not rule4:
        return None
    cols_ok, _ = _eligible_blocks(source, file_name, rule4)
    if not cols_ok:
        return None
    if batches is None:
        batches = synthetic_batches(source)
        if batches is None or not _token_ids(batches[0]):
            return None
        output_fn = output_fn_for(source, batches[0])
    try:
        with warnings.catch_warnings():  # modules the output never used get no block: no feedback there
            warnings.simplefilter("ignore", RuntimeWarning)
            blocks, _ = fisher_kfac_blocks(
                source, batches, mode="sampled", output=output, columns=cols_ok, rows=set(),
                output_fn=output_fn, seed=0, draws=SYNTHETIC_DRAWS,
            )  # fmt: skip
    except (RuntimeError, TypeError, ValueError):  # a model the estimator cannot differentiate: no feedback
        return None
    out = {}
    for k, v in blocks.items():
        h = v.detach().cpu().double().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, np.float64)
        if file_name(k) in rule4 and np.all(np.isfinite(h)) and has_curvature(h):
            out[file_name(k)] = h
    return out or None
