"""Per-row / per-column step scales (channel scales) vs none vs NNCodec, side by side in one run.

    python bench/python/bench_scales.py [--models minilm,cnn] [--threads 2]

Same models, fidelity functions and Fisher estimation as bench_rd.py (imported from it): MiniLM's
fidelity is the mean cosine of sentence embeddings on the 26 odd-numbered sentences, its Fisher
information comes from the 26 even-numbered ones; the digits CNN is scored by top-1 on the 450
held-out digits. nnpress variants, both trellis with Fisher step allocation + smoothed per-weight
importance (the best variant of bench_rd.py):

  * "no scales"       — as in bench_rd.py;
  * "channel scales"  — plus per-row and per-column step scales from the Fisher rank-1 fit
                        (tune.channel_scales_from_importance, allocate_steps(channel_scales=...)).

Every nnpress point is a real .nnp file written by nnpress.compress (size = the whole file: chunks,
table with the scale exponents, metadata) and decoded by nnpress.decompress before it is scored —
so the fidelity is that of the decoded file. NNCodec 2.1.3: dependent quantization, qp sweep; size
= its whole bitstream. Prints a markdown table per model and the ratio at the budget.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_rd  # noqa: E402
import nnpress  # noqa: E402
import peers  # noqa: E402
from nnpress import tune  # noqa: E402
from nnpress.config import HESSIAN_DAMP, CodecConfig, TensorPlan  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def nnpress_file_point(
    setup, step, sens, imp, scales, threads, tmp, hessians=None, hessian_damp=HESSIAN_DAMP, row_hessians=None
):
    w = setup["weights"]
    n_params = sum(v.size for v in w.values())
    t0 = time.perf_counter()
    plan = tune.allocate_steps(
        w,
        step,
        sens,
        method="trellis",
        channel_scales=scales,
        importance=imp,
        hessians=hessians,
        hessian_damp=hessian_damp,
    )
    overrides = dict(plan)
    overrides["*"] = TensorPlan(lossless=True)  # everything not planned (biases, norms) stays exact
    cfg = CodecConfig(method="trellis", plan=overrides, threads=threads, hessian_damp=hessian_damp)
    path = Path(tmp) / "m.nnp"
    rep = nnpress.compress(
        w,
        path,
        cfg,
        importance={k: v for k, v in imp.items() if k in plan},
        hessians=None if hessians is None else {k: v for k, v in hessians.items() if k in plan},
        row_hessians=None if row_hessians is None else {k: v for k, v in row_hessians.items() if k in plan},
    )
    t_c = time.perf_counter() - t0
    dec = nnpress.decompress(path, as_numpy=True)
    state = {k: dec[k] for k in w}
    metric = setup["evaluate"](state)
    n_scaled = sum(1 for p in plan.values() if p.row_scale_exp is not None or p.col_scale_exp is not None)
    scale_bytes = sum(len(p.row_scale_exp or ()) + len(p.col_scale_exp or ()) for p in plan.values())
    return {
        "step": step,
        "bits_per_param": 8 * rep.file_bytes / n_params,
        "metric": metric,
        "min": setup.get("last", {}).get("min"),
        "compress_s": t_c,
        "file_bytes": rep.file_bytes,
        "scaled_tensors": n_scaled,
        "scale_bytes": scale_bytes,
        "version": ".".join(map(str, nnpress.NnpFile(path).version)),
    }


def run(setup, threads, steps_plain, steps_scaled, qps, strengths=(0.5,), floor=0.1):
    w = setup["weights"]
    sens, imp_raw = tune.sensitivities_from_fisher(setup["fisher"])
    imp_raw = {k: v for k, v in imp_raw.items() if k in w and w[k].ndim >= 2}
    imp = tune.smooth_importance(imp_raw)
    g = tune.default_step(w, rel=1.0)
    plain = "nnpress trellis, Fisher alloc + importance (no scales)"
    runs = [(plain, steps_plain, None)] if steps_plain else []
    for st in strengths:
        runs.append(
            (
                f"nnpress trellis, Fisher alloc + importance + channel scales (strength {st}, floor {floor})",
                steps_scaled,
                tune.channel_scales_from_importance(imp_raw, strength=st, floor=floor),
            )
        )
    curves = {label: [] for label, _, _ in runs}
    curves["NNCodec DQ"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, steps, sc in runs:
            for r in steps:
                p = nnpress_file_point(setup, g * r, sens, imp, sc, threads, tmp)
                log(
                    f"  {label}: step {g * r:.5f} (rel {r}): {p['bits_per_param']:.4f} b/p {setup['metric']} "
                    f"{p['metric']:.5f} (file {p['version']}, {p['scaled_tensors']} tensors with scales, "
                    f"{p['scale_bytes']} exponent bytes; {p['compress_s']:.0f}s)"
                )
                curves[label].append(p)
    for qp in qps:
        p = bench_rd.nncodec_point(setup, qp, use_dq=True)
        log(f"  NNCodec DQ qp {qp}: {p['bits_per_param']:.4f} b/p {p['metric']:.5f}")
        curves["NNCodec DQ"].append(p)
    return curves


def report(setup, curves, peer="NNCodec DQ"):
    """Markdown table of every curve, then each nnpress curve's size at the budget relative to
    ``peer``'s (smallest measured points meeting it, and interpolated)."""
    print(f"### {setup['name']} — budget {setup['metric']} >= {setup['budget']:.4f} (original {setup['base']:.4f})\n")
    print("| variant | points (bits/param → fidelity) | smallest meeting the budget | interpolated at the budget |")
    print("|---|---|---|---|")
    best = {}
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p["bits_per_param"])
        b = bench_rd.best_meeting(pts, setup["budget"])
        it = bench_rd.interp_bits_at(pts, setup["budget"])
        best[name] = (b, it)
        sweep = ", ".join(f"{p['bits_per_param']:.3f}→{p['metric']:.5f}" for p in pts)
        bb = "—" if b is None else f"{b['bits_per_param']:.3f} ({b['metric']:.5f})"
        print(f"| {name} | {sweep} | {bb} | {'—' if it is None else f'{it:.3f}'} |")
    nn_b, nn_i = best.get(peer, (None, None))
    print()
    for name in [n for n in curves if n.startswith("nnpress")]:
        b, it = best[name]
        if b is not None and nn_b is not None:
            print(
                f"- {name}: smallest measured point / {peer}'s: {b['bits_per_param']:.3f} / "
                f"{nn_b['bits_per_param']:.3f} = **{b['bits_per_param'] / nn_b['bits_per_param']:.3f}x**"
            )
        if it is not None and nn_i is not None:
            print(f"  interpolated at the budget: {it:.3f} / {nn_i:.3f} = {it / nn_i:.3f}x")
    print()
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="minilm,cnn")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--strengths", default="0.3", help="channel scale exponents to compare (comma-separated)")
    ap.add_argument("--floor", type=float, default=0.1, help="floor of the row/column Fisher factors")
    ap.add_argument(
        "--steps-plain", default=None, help="relative steps without scales (comma-separated; empty string: skip)"
    )
    ap.add_argument("--steps-scaled", default=None, help="relative steps with scales (comma-separated)")
    ap.add_argument("--qps", default=None, help="NNCodec qps (comma-separated; empty string: skip)")
    args = ap.parse_args()
    strengths = tuple(float(x) for x in args.strengths.split(","))

    def floats(v, default):
        return default if v is None else tuple(float(x) for x in v.split(",") if x)

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    peers.import_nncodec()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; load {os.getloadavg()}; nnpress "
        f"{nnpress.__version__}; command: python bench/python/bench_scales.py {' '.join(sys.argv[1:])}\n"
    )
    for m in args.models.split(","):
        t0 = time.perf_counter()
        if m == "minilm":
            setup = bench_rd.minilm_setup()
            curves = run(
                setup,
                args.threads,
                floats(args.steps_plain, (0.05, 0.06, 0.065, 0.07)),
                floats(args.steps_scaled, (0.07, 0.075, 0.08, 0.085, 0.09)),
                tuple(int(q) for q in floats(args.qps, (-40, -39, -38, -37, -36))),
                strengths,
                args.floor,
            )
        else:
            setup = bench_rd.digits_setup(m)
            rels = (0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8)
            curves = run(
                setup,
                args.threads,
                floats(args.steps_plain, rels),
                floats(args.steps_scaled, rels),
                tuple(int(q) for q in floats(args.qps, (-44, -40, -36, -32, -28, -24, -20))),
                strengths,
                args.floor,
            )
        report(setup, curves)
        log(f"{setup['name']}: {time.perf_counter() - t0:.0f}s; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
