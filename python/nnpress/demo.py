"""``nnpress demo``: the built-in default, end to end, in seconds.

Trains the LeNet-style digits CNN (``nnpress.demo_models``), compresses it to a ``.nnp`` file,
decompresses it into a fresh model, evaluates test accuracy before and after, and sweeps a few step
sizes for a rate–accuracy curve (PNG, if matplotlib is installed).

``run_demo(out_dir)`` returns a dict (what ``nnpress demo --json`` prints); ``format_demo(result)``
is the human-readable table, ``format_demo_line(result)`` its one essential line (``nnpress demo
-q``). Needs torch and scikit-learn (imported here, lazily).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Callable

from .config import CodecConfig

__all__ = ["DEFAULT_SWEEP", "format_demo", "format_demo_line", "run_demo"]

# The rate–accuracy sweep: values of CodecConfig.rel_step, the data-free default's knob (each
# tensor's step is rel_step x its std x sqrt(its size / the mean size), halved for the trellis).
DEFAULT_SWEEP = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def run_demo(
    out_dir: str = ".",
    *,
    config: CodecConfig | None = None,
    sweep: Sequence[float] = DEFAULT_SWEEP,
    plot: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    from . import api
    from .demo_models import (
        build_digits_model,
        evaluate_accuracy,
        load_digits_data,
        train_digits_model,
    )

    log = log or (lambda s: None)
    config = config or CodecConfig()
    os.makedirs(out_dir, exist_ok=True)
    nnp_path = os.path.join(out_dir, "digits_cnn.nnp")

    t = time.perf_counter()
    data = load_digits_data()
    log("training the digits CNN (LeNet-5 style) on scikit-learn's 8x8 digits ...")
    model = train_digits_model("cnn", seed=seed, data=data)
    train_s = time.perf_counter() - t
    acc_before = evaluate_accuracy(model, data.x_test, data.y_test)

    log(f"compressing to {nnp_path} ...")
    report = api.compress(model, nnp_path, config)
    t = time.perf_counter()
    state = api.decompress(nnp_path)
    decompress_s = time.perf_counter() - t
    restored = build_digits_model("cnn")
    restored.load_state_dict(state)
    restored.eval()
    acc_after = evaluate_accuracy(restored, data.x_test, data.y_test)

    log("rate-accuracy sweep ...")
    curve = []
    sweep_path = os.path.join(out_dir, "digits_cnn_sweep.nnp")
    for rel in sweep:
        rep = api.compress(model, sweep_path, config.replace(rel_step=float(rel), step=None, qp=None, plan={}))
        m = build_digits_model("cnn")
        m.load_state_dict(api.decompress(sweep_path))
        m.eval()
        curve.append(
            {
                "rel_step": float(rel),
                "file_bytes": rep.file_bytes,
                "bits_per_param": rep.bits_per_param,
                "accuracy": evaluate_accuracy(m, data.x_test, data.y_test),
            }
        )
    try:
        os.remove(sweep_path)
    except OSError:
        pass

    # The DeepCABAC way: Fisher information from calibration batches, steps allocated by it, RD
    # quantization weighted by it, and the global step tuned to the smallest file that keeps the
    # test accuracy within 0.2 points (see nnpress.tune).
    log("Fisher-tuned compression (accuracy budget: -0.2 points) ...")
    tuned = _tuned(model, data, acc_before, out_dir, config)

    plot_path, plot_note = None, None
    if plot:
        plot_path = os.path.join(out_dir, "digits_rate_accuracy.png")
        plot_note = _plot(curve, acc_before, report.original_bytes * 8 / report.params, plot_path)
        if plot_note:
            plot_path = None
    return {
        "model": "digits CNN (LeNet-5 style)",
        "params": report.params,
        "original_bytes": report.original_bytes,
        "file": nnp_path,
        "file_bytes": report.file_bytes,
        "ratio": report.ratio,
        "bits_per_param": report.bits_per_param,
        "accuracy_before": acc_before,
        "accuracy_after": acc_after,
        "test_images": len(data.y_test),
        "times": {"train": train_s, "compress": report.times["total"], "decompress": decompress_s},
        "config": report.config,
        "sweep": curve,
        "tuned": tuned,
        "plot": plot_path,
        "plot_note": plot_note,
    }


def _tuned(model, data, acc_before: float, out_dir: str, config: CodecConfig) -> dict:
    import numpy as np
    import torch

    from . import api, tune
    from .demo_models import build_digits_model, calibration_batches, evaluate_accuracy
    from .fisher import fisher_diagonal

    t = time.perf_counter()
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    sens, imp = tune.sensitivities_from_fisher(fisher_diagonal(model, calibration_batches(16, 64), mode="sampled"))
    imp = tune.smooth_importance({k: v for k, v in imp.items() if weights[k].ndim >= 2})

    def accuracy(state):
        m = build_digits_model("cnn")
        m.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()})
        m.eval()
        return evaluate_accuracy(m, data.x_test, data.y_test)

    res = tune.tune_to_budget(
        weights,
        accuracy,
        acc_before - 0.002,
        sensitivity=sens,
        importance=imp,
        method="rdoq",
        iterations=8,
    )
    path = os.path.join(out_dir, "digits_cnn_tuned.nnp")
    rep = api.compress(model, path, config.replace(plan=res.plan), importance=imp)
    acc = accuracy({k: v.numpy() for k, v in api.decompress(path).items()})
    return {
        "file": path,
        "file_bytes": rep.file_bytes,
        "bits_per_param": rep.bits_per_param,
        "ratio": rep.ratio,
        "accuracy_after": acc,
        "search": res.rows,
        "seconds": time.perf_counter() - t,
    }


def _plot(curve, acc_before: float, original_bits: float, path: str) -> str | None:
    """Writes the PNG; returns a note (instead of raising) if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot written (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    xs = [c["bits_per_param"] for c in curve]
    ys = [100 * c["accuracy"] for c in curve]
    ax.plot(xs, ys, "o-", label="nnpress (DeepCABAC)")
    for c, x, y in zip(curve, xs, ys):
        ax.annotate(f"k={c['rel_step']:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.axhline(
        100 * acc_before,
        color="gray",
        ls="--",
        lw=1,
        label=f"float32 ({original_bits:.0f} bits/param)",
    )
    ax.set_xlabel("bits per parameter (whole file)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits CNN: rate vs accuracy (default config, rel_step = k)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return None


def format_demo_line(r: dict) -> str:
    """One line: the compressed file, its size and ratio, the accuracy before and after."""
    return (
        f"{r['file']}: {r['params']:,} parameters, "
        f"{r['original_bytes']:,} -> {r['file_bytes']:,} bytes "
        f"({r['ratio']:.1f}x, {r['bits_per_param']:.3f} bits/param), accuracy "
        f"{100 * r['accuracy_before']:.2f} % -> {100 * r['accuracy_after']:.2f} %"
    )


def format_demo(r: dict) -> str:
    rows = [
        ("model", f"{r['model']}, {r['params']:,} parameters"),
        ("float32 size", f"{r['original_bytes']:,} bytes"),
        ("compressed", f"{r['file_bytes']:,} bytes  ({r['file']})"),
        ("ratio", f"{r['ratio']:.1f}x"),
        ("bits/param", f"{r['bits_per_param']:.3f}"),
        (
            "accuracy before",
            f"{100 * r['accuracy_before']:.2f} %  ({r['test_images']} test images)",
        ),
        ("accuracy after", f"{100 * r['accuracy_after']:.2f} %"),
        ("train time", f"{r['times']['train']:.2f} s"),
        ("compress time", f"{r['times']['compress']:.3f} s"),
        ("decompress time", f"{r['times']['decompress']:.3f} s"),
    ]
    w = max(len(k) for k, _ in rows)
    out = [f"{k:<{w}}  {v}" for k, v in rows]
    out.append("")
    out.append("rate-accuracy sweep (default config with rel_step = k):")
    out.append(f"  {'k':>8} {'bytes':>9} {'bits/param':>10} {'accuracy':>9}")
    for c in r["sweep"]:
        out.append(
            f"  {c['rel_step']:>8.4g} {c['file_bytes']:>9,} {c['bits_per_param']:>10.3f} {100 * c['accuracy']:>8.2f}%"
        )
    t = r.get("tuned")
    if t:
        out.append("")
        out.append(
            f"Fisher-tuned (rdoq, steps by sensitivity, smallest file within 0.2 points): "
            f"{t['file_bytes']:,} bytes, {t['bits_per_param']:.3f} bits/param, {t['ratio']:.1f}x, "
            f"accuracy {100 * t['accuracy_after']:.2f} %  ({t['file']}, {t['seconds']:.1f} s)"
        )
    out.append("")
    out.append(f"plot: {r['plot']}" if r["plot"] else f"plot: {r['plot_note'] or 'skipped (--no-plot)'}")
    return "\n".join(out)
