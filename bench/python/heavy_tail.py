"""A digits model with one heavy-tailed weight tensor, built by an exactly function-preserving change.

    import heavy_tail
    sd, info = heavy_tail.heavy_tailed_state_dict(state_dict)   # the trained digits MLP's state_dict

Pixels 0, 32 and 39 of the 8x8 digits (``nnpress.demo_models.load_digits_data``) are 0 in every one
of the 1,797 images (train and test), so the model's first layer always sees the input value -1
there (``forward`` maps x to 2x - 1). Adding ``delta`` to ``fc1.weight[r, p]`` for such a pixel p and
``delta`` to ``fc1.bias[r]`` leaves fc1's output unchanged on every image of the data set (up to
float32 rounding of the two sums). ``heavy_tailed_state_dict`` does that for ``n_outliers`` (row,
pixel) pairs, with ``delta`` chosen so that the tensor's std becomes ``std_ratio`` times its
original std: a few weights then set the std, the bulk is ``std_ratio`` times smaller than it, and
the median |w| is a small fraction of the std (``info`` reports max/std and median|w|/std). The
output still depends on every weight's quantization error, the outliers' included: the bias
cancels the outliers' values, not their errors.
"""

from __future__ import annotations

import numpy as np

CONSTANT_PIXELS = (0, 32, 39)  # zero in every image of sklearn's digits


def heavy_tailed_state_dict(
    state_dict, *, layer: str = "fc1", n_outliers: int = 3, std_ratio: float = 40.0, seed: int = 0
):
    """(new state_dict, info): ``layer``'s weight gets ``n_outliers`` large entries on constant
    input pixels, its bias compensates them exactly (module docstring)."""
    w = state_dict[f"{layer}.weight"].detach().clone().double()
    b = state_dict[f"{layer}.bias"].detach().clone().double()
    if w.shape[1] != 64:
        raise ValueError(f"{layer} must see the 64 input pixels, has {w.shape[1]} inputs")
    rng = np.random.default_rng(seed)
    rows = rng.choice(w.shape[0], size=n_outliers, replace=False)
    pixels = [CONSTANT_PIXELS[i % len(CONSTANT_PIXELS)] for i in range(n_outliers)]
    n = w.numel()
    var0 = float(w.var(unbiased=False))
    # n_outliers entries of size ~delta raise the variance by ~n_outliers * delta**2 / n
    delta = float(np.sqrt((std_ratio**2 - 1.0) * var0 * n / n_outliers))
    signs = rng.choice([-1.0, 1.0], size=n_outliers)
    for r, p, sg in zip(rows, pixels, signs):
        w[r, p] += sg * delta
        b[r] += sg * delta  # the input there is always -1: w * (-1) + b is unchanged
    out = {k: v.detach().clone() for k, v in state_dict.items()}
    out[f"{layer}.weight"] = w.float()
    out[f"{layer}.bias"] = b.float()
    wf = out[f"{layer}.weight"].numpy().ravel()
    std = float(wf.std())
    info = {
        "layer": f"{layer}.weight",
        "n_outliers": n_outliers,
        "delta": delta,
        "rows": [int(r) for r in rows],
        "pixels": pixels,
        "std": std,
        "bulk_std": float(np.sqrt(var0)),
        "max_over_std": float(np.abs(wf).max() / std),
        "median_abs_over_std": float(np.median(np.abs(wf)) / std),
    }
    return out, info
