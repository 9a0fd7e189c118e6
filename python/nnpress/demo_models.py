"""Built-in demo models: small classifiers for scikit-learn's 8x8 handwritten digits.

Used by ``nnpress demo``, the tests and the benchmarks. Everything here is deterministic and runs
offline: the digits data set (1797 images) ships inside scikit-learn, nothing is downloaded.

Contract
--------
- ``load_digits_data(seed=0)`` -> ``DigitsData`` of numpy arrays: images float32 in [0, 1] with shape
  (N, 1, 8, 8), labels int64 in 0..9. Stratified split, 25 % test; the same seed gives the same split.
- ``DigitsCNN`` (LeNet-5 style, 42,890 parameters) and ``DigitsMLP`` (64-256-128-10, 50,826
  parameters) are ordinary ``torch.nn.Module`` classes; both accept (N, 1, 8, 8) or (N, 64) input and
  return logits (N, 10).
- ``train_digits_model(kind, seed, epochs)`` -> trained model in eval mode, float32, on the CPU. Two
  calls with the same arguments give bit-identical weights (on the same machine and torch build).
- ``evaluate_accuracy(model, x, y)`` -> float in [0, 1].
- ``calibration_batches(n_batches, batch_size, seed)`` -> list of (x, y) torch tensor pairs drawn from
  the training split, for Fisher estimation (see ``nnpress.fisher``).

Surprises
---------
- Importing this module needs only numpy. torch and scikit-learn are imported when first used;
  ``DigitsCNN``/``DigitsMLP`` are created on first attribute access (a PEP 562 module
  ``__getattr__``), so ``from nnpress.demo_models import DigitsCNN`` is what imports torch.
- ``train_digits_model`` runs single-threaded with ``torch.use_deterministic_algorithms(True)`` and a
  forked RNG; the caller's thread count, determinism flag and global RNG state are restored afterwards.
- The train/test split is fixed (``split_seed=0``) independently of the training ``seed``, so models
  trained with different seeds are evaluated on the same test images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    # Created on first access by __getattr__ below.
    DigitsCNN: type[torch.nn.Module]
    DigitsMLP: type[torch.nn.Module]

__all__ = [
    "DigitsCNN",
    "DigitsData",
    "DigitsMLP",
    "build_digits_model",
    "calibration_batches",
    "evaluate_accuracy",
    "load_digits_data",
    "train_digits_model",
]

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
TEST_FRACTION = 0.25
PIXEL_MAX = 16.0  # scikit-learn's digits are integers 0..16

DROPOUT = 0.2  # after each hidden fully connected layer (inactive in eval mode)
LABEL_SMOOTHING = 0.1

# Training recipe per model kind: (epochs, batch size, Adam learning rate), cosine-annealed.
_RECIPES = {
    "cnn": (30, 32, 3e-3),
    "mlp": (30, 32, 2e-3),
}


class DigitsData(NamedTuple):
    """Train/test split of the digits: images (N, 1, 8, 8) float32 in [0, 1], labels (N,) int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_data(seed: int = 0, test_fraction: float = TEST_FRACTION) -> DigitsData:
    """Load scikit-learn's digits and split them, stratified by class, deterministically per seed.

    Raises ValueError if ``test_fraction`` is not in (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_digits_data: test_fraction must be in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / np.float32(PIXEL_MAX)).reshape(-1, *IMAGE_SHAPE)
    labels = digits.target.astype(np.int64)

    rng = np.random.default_rng(seed)
    test_idx = []
    for cls in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_idx.append(members[: round(test_fraction * members.size)])
    is_test = np.zeros(labels.size, dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    return DigitsData(
        x_train=np.ascontiguousarray(images[~is_test]),
        y_train=labels[~is_test],
        x_test=np.ascontiguousarray(images[is_test]),
        y_test=labels[is_test],
    )


def _define_models() -> dict[str, type]:
    """Create the torch model classes (called once, on first access)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class DigitsCNN(nn.Module):
        """LeNet-5-style CNN for 1x8x8 digits (42,890 parameters).

        Input pixels in [0, 1] are mapped to [-1, 1], then
        conv 5x5 (1->6, pad 2) -> relu -> maxpool 2 -> conv 3x3 (6->16, pad 1) -> relu
        -> fc 256->120 -> relu -> dropout -> fc 120->84 -> relu -> dropout -> fc 84->10 (logits).
        """

        def __init__(self, num_classes: int = NUM_CLASSES) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)  # -> 6x8x8
            self.pool = nn.MaxPool2d(2)  # -> 6x4x4
            self.conv2 = nn.Conv2d(6, 16, kernel_size=3, padding=1)  # -> 16x4x4
            self.fc1 = nn.Linear(16 * 4 * 4, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, num_classes)
            self.dropout = nn.Dropout(DROPOUT)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = 2.0 * x.reshape(-1, *IMAGE_SHAPE) - 1.0
            x = self.pool(F.relu(self.conv1(x)))
            x = F.relu(self.conv2(x))
            x = torch.flatten(x, 1)
            x = self.dropout(F.relu(self.fc1(x)))
            x = self.dropout(F.relu(self.fc2(x)))
            return self.fc3(x)

    class DigitsMLP(nn.Module):
        """MLP 64 -> 256 -> 128 -> 10, ReLU + dropout, input mapped to [-1, 1] (50,826 params)."""

        def __init__(self, num_classes: int = NUM_CLASSES, hidden: tuple[int, int] = (256, 128)):
            super().__init__()
            self.fc1 = nn.Linear(64, hidden[0])
            self.fc2 = nn.Linear(hidden[0], hidden[1])
            self.fc3 = nn.Linear(hidden[1], num_classes)
            self.dropout = nn.Dropout(DROPOUT)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = 2.0 * torch.flatten(x, 1) - 1.0
            x = self.dropout(F.relu(self.fc1(x)))
            x = self.dropout(F.relu(self.fc2(x)))
            return self.fc3(x)

    for cls in (DigitsCNN, DigitsMLP):  # so pickle finds them through the module's __getattr__
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return {"DigitsCNN": DigitsCNN, "DigitsMLP": DigitsMLP}


_model_classes: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name in ("DigitsCNN", "DigitsMLP"):
        if not _model_classes:
            _model_classes.update(_define_models())
        return _model_classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_digits_model(kind: str = "cnn") -> torch.nn.Module:
    """An untrained ``DigitsCNN`` (kind="cnn") or ``DigitsMLP`` (kind="mlp"), initialised from torch's
    global RNG. Raises ValueError for any other kind."""
    if kind == "cnn":
        return __getattr__("DigitsCNN")()
    if kind == "mlp":
        return __getattr__("DigitsMLP")()
    raise ValueError(f"build_digits_model: kind must be 'cnn' or 'mlp', got {kind!r}")


@contextlib.contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """Seed torch, force one thread and deterministic kernels; restore the caller's state on exit."""
    import torch

    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(det, warn_only=det_warn_only)
            torch.set_num_threads(threads)


def train_digits_model(
    kind: str = "cnn",
    seed: int = 0,
    epochs: int | None = None,
    data: DigitsData | None = None,
) -> torch.nn.Module:
    """Train a digits classifier (Adam, cosine schedule, cross-entropy with label smoothing 0.1,
    dropout 0.2); return it in eval mode on the CPU.

    ``epochs=None`` uses the built-in recipe (30 epochs; about 1-2 s on one core for either kind,
    test accuracy about 98-99 % for the CNN). ``data`` defaults to ``load_digits_data()``. The result is
    a deterministic function of (kind, seed, epochs, data). Raises ValueError for an unknown kind or
    epochs < 0.
    """
    import torch
    import torch.nn.functional as F

    if kind not in _RECIPES:
        raise ValueError(f"train_digits_model: kind must be 'cnn' or 'mlp', got {kind!r}")
    default_epochs, batch_size, lr = _RECIPES[kind]
    epochs = default_epochs if epochs is None else int(epochs)
    if epochs < 0:
        raise ValueError(f"train_digits_model: epochs must be >= 0, got {epochs}")
    data = load_digits_data() if data is None else data
    x = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(data.y_train, dtype=np.int64))

    with _deterministic_torch(seed):
        model = build_digits_model(kind)
        order_rng = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        model.train()
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=order_rng)
            for start in range(0, x.shape[0], batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=LABEL_SMOOTHING)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            schedule.step()
    return model.eval()


def evaluate_accuracy(model: torch.nn.Module, x: Any, y: Any, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on (x, y) (numpy arrays or torch tensors), in [0, 1].

    Runs in eval mode without gradients on the model's device; the model's train/eval mode is
    restored afterwards. Raises ValueError if x and y disagree in length or are empty.
    """
    import torch

    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"evaluate_accuracy: need as many labels as inputs (>0), got {x.shape[0]} inputs and {y.shape[0]} labels"
        )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                xb = x[start : start + batch_size].to(device=device, dtype=dtype)
                pred = model(xb).argmax(dim=-1).cpu()
                correct += int((pred == y[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / x.shape[0]


def calibration_batches(
    n_batches: int = 8, batch_size: int = 64, seed: int = 0, data: DigitsData | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` (x, y) batches of ``batch_size`` training examples (float32 (B,1,8,8), int64 (B,)).

    Examples are drawn without replacement from a seeded permutation of the training split; if more
    are asked for than exist, further permutations follow. ``data`` defaults to ``load_digits_data()``.
    Raises ValueError if n_batches < 0 or batch_size < 1.
    """
    import torch

    if n_batches < 0 or batch_size < 1:
        raise ValueError(f"calibration_batches: need n_batches >= 0 and batch_size >= 1, got {n_batches}, {batch_size}")
    data = load_digits_data() if data is None else data
    n_train = data.y_train.shape[0]
    rng = np.random.default_rng(seed)
    needed = n_batches * batch_size
    n_perms = -(-needed // n_train) if needed else 0
    order = np.concatenate([rng.permutation(n_train) for _ in range(n_perms)] or [np.zeros(0, int)])
    batches = []
    for b in range(n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        batches.append(
            (
                torch.from_numpy(np.ascontiguousarray(data.x_train[idx], dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(data.y_train[idx], dtype=np.int64)),
            )
        )
    return batches
