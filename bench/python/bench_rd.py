"""Rate–fidelity of nnpress vs NNCodec, side by side in one run (issue 3 evidence).

    python bench/python/bench_rd.py [--models cnn,mlp,minilm] [--out bench/plots] [--quick]
    python bench/python/bench_rd.py --models minilm --peers-only --variants dq,urq,lambda,opt_qp \
        --qps=-42,-40,-38,-36,-34,-32 --refine      # NNCodec only (no Fisher, no nnpress variants)

Models: the digits CNN and MLP (trained here in seconds; fidelity = top-1 accuracy on the held-out
450 digits) and all-MiniLM-L6-v2 (fidelity = mean and min cosine between the original and the
decoded model's sentence embeddings over the 26 odd-numbered sentences of minilm.SENTENCES; the
Fisher information of nnpress is estimated on the 26 even-numbered ones, so fidelity is measured
on sentences the encoder never saw).

nnpress variants (ablations): {nearest, rdoq, trellis} x {one global step, Fisher step allocation,
Fisher allocation + smoothed per-weight Fisher importance}. Size = the real coded bytes of every
quantized tensor (``encode_levels``) + the raw bytes of the tensors kept exact (biases, norms),
per parameter of the whole model. NNCodec 2.1.3: qp sweep with dependent quantization, plus URQ,
lambda_scale and opt_qp variants; size = its whole bitstream. ``--peers-only`` runs only NNCodec
(the ``--variants`` chosen, over ``--qps``); ``--refine`` then adds the odd qp inside the pair of
sweep points that brackets the budget, so NNCodec's best setting is found at qp resolution 1.
Budgets: CNN/MLP top-1 drop <= 0.2
points, MiniLM mean cosine >= 0.999. Writes PNG curves to --out and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import nnpress  # noqa: E402
import peers  # noqa: E402
from nnpress import tune  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# models and fidelity functions
# ----------------------------------------------------------------------------------------------


def digits_setup(kind, with_fisher=True):
    import torch

    from nnpress.demo_models import calibration_batches, evaluate_accuracy, load_digits_data, train_digits_model
    from nnpress.fisher import fisher_diagonal

    model = train_digits_model(kind, seed=0)
    data = load_digits_data()
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    def evaluate(state):
        m = type(model)()
        m.load_state_dict(
            {k: torch.from_numpy(np.asarray(v, np.float32).reshape(weights[k].shape)) for k, v in state.items()}
        )
        m.eval()
        return evaluate_accuracy(m, data.x_test, data.y_test)

    fisher = None
    if with_fisher:
        t0 = time.perf_counter()
        fisher = fisher_diagonal(model, calibration_batches(16, 64), mode="sampled")
        log(f"{kind}: Fisher in {time.perf_counter() - t0:.1f}s")
    base = evaluate(weights)
    return {
        "name": f"digits {kind}",
        "weights": weights,
        "evaluate": evaluate,
        "fisher": fisher,
        "base": base,
        "budget": base - 0.002,
        "metric": "top-1",
        "min_metric": None,
    }


def minilm_setup(with_fisher=True, calibration=None, seed=0):
    """MiniLM weights, fidelity on the odd-numbered sentences and (optionally) the Fisher on
    ``calibration`` (default: the even-numbered ones). The dict also holds the Fisher's model
    ("fisher_model": mean-pooled output) and "batches", for further estimates on the same data."""
    import torch

    import minilm
    from nnpress.fisher import fisher_diagonal

    model, tok = minilm.load_minilm()
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    cal, ev = minilm.SENTENCES[::2], minilm.SENTENCES[1::2]
    if calibration is not None:
        cal = list(calibration)
    ref = minilm.embed(model, ev)
    last = {}

    def evaluate(state):
        mean, mn = minilm.cosine_fidelity(ref, minilm.embed(state, ev))
        last["min"] = mn
        return mean

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            msk = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * msk).sum(1) / msk.sum(1)

    if not with_fisher:
        return {
            "name": "all-MiniLM-L6-v2",
            "weights": weights,
            "evaluate": evaluate,
            "fisher": None,
            "base": 1.0,
            "budget": 0.999,
            "metric": "mean cos",
            "last": last,
        }
    batches = []
    for i in range(0, len(cal), 4):
        enc = tok(cal[i : i + 4], padding=True, truncation=True, max_length=256, return_tensors="pt")
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    t0 = time.perf_counter()
    fisher = fisher_diagonal(Pooled(model), batches, mode="sampled", output="gaussian", seed=seed)
    fisher = {k[2:]: v for k, v in fisher.items()}  # strip "m."
    log(f"minilm: Fisher on {len(cal)} sentences in {time.perf_counter() - t0:.1f}s")
    return {
        "name": "all-MiniLM-L6-v2",
        "weights": weights,
        "evaluate": evaluate,
        "fisher": fisher,
        "base": 1.0,
        "budget": 0.999,
        "metric": "mean cos",
        "last": last,
        "fisher_model": Pooled(model),
        "batches": batches,
        "calibration": cal,
    }


# ----------------------------------------------------------------------------------------------
# nnpress and NNCodec points
# ----------------------------------------------------------------------------------------------


def nnpress_point(setup, method, step, sens, imp):
    w = setup["weights"]
    n_params = sum(v.size for v in w.values())
    t0 = time.perf_counter()
    plan = tune.allocate_steps(w, step, sens, method=method)
    levels, recon, _ = tune.apply_plan(w, plan, imp)
    t_q = time.perf_counter() - t0
    coded = sum(len(nnpress.encode_levels(q)) for q in levels.values())
    raw = sum(np.asarray(v).nbytes for k, v in w.items() if k not in plan)
    state = {k: recon.get(k, v) for k, v in w.items()}
    metric = setup["evaluate"](state)
    return {
        "step": step,
        "bits_per_param": 8 * (coded + raw) / n_params,
        "metric": metric,
        "min": setup.get("last", {}).get("min"),
        "quantize_s": t_q,
    }


def nncodec_point(setup, qp, **kw):
    w = setup["weights"]
    n_params = sum(v.size for v in w.values())
    data, info = peers.nncodec_compress_state_dict(w, qp=qp, **kw)
    rec = peers.nncodec_decompress(data, shapes=info["shapes"])
    state = {k: (rec[k] if k in rec else v) for k, v in w.items()}
    metric = setup["evaluate"](state)
    return {
        "qp": qp,
        "settings": kw,
        "bits_per_param": 8 * len(data) / n_params,
        "metric": metric,
        "min": setup.get("last", {}).get("min"),
        "encode_s": info["encode_s"],
    }


def best_meeting(points, budget):
    ok = [p for p in points if p["metric"] >= budget]
    return min(ok, key=lambda p: p["bits_per_param"]) if ok else None


def interp_bits_at(points, budget):
    """Bits/param at the budget, interpolated linearly in (metric, bits) between the bracketing
    points of a sweep (None if the sweep does not bracket it)."""
    pts = sorted(points, key=lambda p: p["bits_per_param"])
    for a, b in zip(pts, pts[1:]):
        if (a["metric"] - budget) * (b["metric"] - budget) <= 0 and a["metric"] != b["metric"]:
            t = (budget - a["metric"]) / (b["metric"] - a["metric"])
            return a["bits_per_param"] + t * (b["bits_per_param"] - a["bits_per_param"])
    return None


PEER_VARIANTS = ("dq", "urq", "lambda", "opt_qp")


def _peer_settings(variant, lambda_scales):
    """(curve name, nncodec_compress_state_dict keyword arguments) for one NNCodec variant."""
    if variant == "dq":
        return [("NNCodec DQ", {"use_dq": True})]
    if variant == "urq":
        return [("NNCodec URQ", {"use_dq": False})]
    if variant == "lambda":
        return [(f"NNCodec DQ lambda_scale={ls:g}", {"use_dq": True, "lambda_scale": ls}) for ls in lambda_scales]
    if variant == "opt_qp":
        return [("NNCodec DQ opt_qp", {"use_dq": True, "opt_qp": True})]
    raise ValueError(f"unknown NNCodec variant {variant!r}; expected one of {PEER_VARIANTS}")


def run_peers(setup, variants, qps, refine, lambda_scales):
    """NNCodec curves: every variant over ``qps``; with ``refine`` also the qp between the two sweep
    points that bracket the budget (when they are 2 apart), so the best setting is at qp resolution 1."""
    curves = {}
    for v in variants:
        for name, kw in _peer_settings(v, lambda_scales):
            pts = []
            for qp in qps:
                p = nncodec_point(setup, qp, **kw)
                log(
                    f"  {name} qp {qp}: {p['bits_per_param']:.3f} b/p {setup['metric']} {p['metric']:.5f}"
                    + (f" (min {p['min']:.5f})" if p.get("min") is not None else "")
                    + f" enc {p['encode_s']:.1f}s"
                )
                pts.append(p)
            if refine:
                done = {p["qp"] for p in pts}
                by_qp = sorted(pts, key=lambda p: p["qp"])
                for a, b in zip(by_qp, by_qp[1:]):
                    if (
                        b["qp"] - a["qp"] == 2
                        and a["metric"] >= setup["budget"] > b["metric"]
                        and a["qp"] + 1 not in done
                    ):
                        p = nncodec_point(setup, a["qp"] + 1, **kw)
                        log(
                            f"  {name} qp {a['qp'] + 1} (refine): {p['bits_per_param']:.3f} b/p {setup['metric']} "
                            f"{p['metric']:.5f}"
                            + (f" (min {p['min']:.5f})" if p.get("min") is not None else "")
                            + f" enc {p['encode_s']:.1f}s"
                        )
                        pts.append(p)
            curves[name] = sorted(pts, key=lambda p: p["qp"])
    return curves


def run_model(setup, quick):
    w = setup["weights"]
    sens, imp_raw = tune.sensitivities_from_fisher(setup["fisher"])
    imp = tune.smooth_importance({k: v for k, v in imp_raw.items() if k in w and w[k].ndim >= 2})
    g = tune.default_step(w, rel=1.0)  # RMS of the quantized weights
    is_lm = setup["name"].startswith("all-MiniLM")
    glob_steps = [g * r for r in ((0.03, 0.04, 0.05, 0.06) if is_lm else (0.02, 0.04, 0.08, 0.12, 0.16, 0.24, 0.32))]
    fish_steps = [g * r for r in ((0.05, 0.06, 0.07, 0.08, 0.1) if is_lm else (0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6))]
    variants = [
        ("nearest", "global"),
        ("rdoq", "global"),
        ("trellis", "global"),
        ("nearest", "fisher"),
        ("rdoq", "fisher"),
        ("trellis", "fisher"),
        ("rdoq", "fisher+imp"),
        ("trellis", "fisher+imp"),
    ]
    if quick:
        variants = [("nearest", "global"), ("trellis", "fisher+imp")]
    curves = {}
    for method, alloc in variants:
        pts = []
        for step in glob_steps if alloc == "global" else fish_steps:
            p = nnpress_point(
                setup, method, step, None if alloc == "global" else sens, imp if alloc == "fisher+imp" else None
            )
            log(
                f"  nnpress {method:7s} {alloc:10s} step {step:.5f}: {p['bits_per_param']:.3f} b/p "
                f"{setup['metric']} {p['metric']:.5f} ({p['quantize_s']:.1f}s)"
            )
            pts.append(p)
        curves[f"nnpress {method} {alloc}"] = pts
    qps = [-44, -40, -38, -36, -34, -32, -28, -24, -20] if not quick else [-38, -32]
    nn_curves = {"NNCodec DQ": [], "NNCodec URQ": [], "NNCodec DQ lambda_scale=1": [], "NNCodec DQ opt_qp": []}
    for qp in qps:
        nn_curves["NNCodec DQ"].append(nncodec_point(setup, qp, use_dq=True))
        log(
            f"  NNCodec DQ qp {qp}: {nn_curves['NNCodec DQ'][-1]['bits_per_param']:.3f} b/p "
            f"{nn_curves['NNCodec DQ'][-1]['metric']:.5f}"
        )
    if not quick:
        for qp in (-40, -38, -36):
            nn_curves["NNCodec URQ"].append(nncodec_point(setup, qp, use_dq=False))
            nn_curves["NNCodec DQ lambda_scale=1"].append(nncodec_point(setup, qp, use_dq=True, lambda_scale=1.0))
            nn_curves["NNCodec DQ opt_qp"].append(nncodec_point(setup, qp, use_dq=True, opt_qp=True))
    curves.update({k: v for k, v in nn_curves.items() if v})
    return curves


def plot(setup, curves, out: Path, suffix: str = ""):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plot")
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p["bits_per_param"])
        style = "--" if name.startswith("NNCodec") else "-"
        ax.plot([p["bits_per_param"] for p in pts], [p["metric"] for p in pts], style, marker="o", ms=3, label=name)
    ax.axhline(setup["budget"], color="gray", lw=0.8, ls=":")
    ax.set_xlabel("bits per parameter (whole model)")
    ax.set_ylabel(setup["metric"])
    lo = setup["budget"] - (0.004 if setup["metric"] == "mean cos" else 0.03)
    ax.set_ylim(lo, setup["base"] + (0.0005 if setup["metric"] == "mean cos" else 0.01))
    ax.set_title(f"{setup['name']}: rate vs fidelity (nnpress vs NNCodec 2.1.3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"rd_{setup['name'].replace(' ', '_').replace('-', '_').lower()}{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cnn,mlp,minilm")
    ap.add_argument("--out", default=str(HERE.parent / "plots"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--peers-only", action="store_true", help="only NNCodec (no Fisher, no nnpress variants)")
    ap.add_argument("--variants", default=",".join(PEER_VARIANTS), help="NNCodec variants with --peers-only")
    ap.add_argument("--qps", default="-44,-40,-38,-36,-34,-32,-28,-24,-20", help="qp sweep with --peers-only")
    ap.add_argument("--refine", action="store_true", help="with --peers-only: add the odd qp at the budget")
    ap.add_argument("--lambda-scales", default="1", help="lambda_scale values of the 'lambda' variant")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    peers.import_nncodec()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; nnpress {nnpress.__version__}; "
        f"command: python bench/python/bench_rd.py {' '.join(sys.argv[1:])}\n"
    )
    results = {}
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        _peer_settings(v, [1.0])  # unknown names fail before any model is loaded
    qps = [int(q) for q in args.qps.split(",") if q]
    lambda_scales = [float(x) for x in args.lambda_scales.split(",") if x]
    for m in args.models.split(","):
        fisher = not args.peers_only
        setup = minilm_setup(fisher) if m == "minilm" else digits_setup(m, fisher)
        log(f"== {setup['name']} (baseline {setup['metric']} {setup['base']:.5f}, budget {setup['budget']:.5f})")
        if args.peers_only:
            curves = run_peers(setup, variants, qps, args.refine, lambda_scales)
        else:
            curves = run_model(setup, args.quick)
        path = plot(setup, curves, out, "_nncodec" if args.peers_only else "")
        results[setup["name"]] = curves
        shown = (
            None
            if path is None
            else (
                path.resolve().relative_to(HERE.parent.parent)
                if path.resolve().is_relative_to(HERE.parent.parent)
                else path
            )
        )
        print(
            f"### {setup['name']} — budget {setup['metric']} >= {setup['budget']:.4f}"
            f" (original {setup['base']:.4f}){'; plot ' + str(shown) if shown else ''}\n"
        )
        print(
            "| variant | smallest measured point meeting the budget: bits/param | its fidelity | "
            "bits/param at the budget (interpolated) |"
        )
        print("|---|---|---|---|")
        rows = {}
        for name, pts in curves.items():
            b = best_meeting(pts, setup["budget"])
            it = interp_bits_at(pts, setup["budget"])
            rows[name] = (b, it)
            fid = (
                "—"
                if b is None
                else (
                    f"{b['metric']:.5f}"
                    + (f" (min {b['min']:.5f})" if b.get("min") else "")
                    + (f", qp {b['qp']}" if "qp" in b else "")
                )
            )
            bb = "—" if b is None else f"{b['bits_per_param']:.3f}"
            ii = "—" if it is None else f"{it:.3f}"
            print(f"| {name} | {bb} | {fid} | {ii} |")
        nn_best = [rows[k][0] for k in rows if k.startswith("NNCodec") and rows[k][0] is not None]
        ours = rows.get("nnpress trellis fisher+imp", (None, None))[0]
        if nn_best and ours:
            nb = min(p["bits_per_param"] for p in nn_best)
            print(
                f"\nnnpress (trellis, Fisher allocation + importance) / best NNCodec setting meeting the budget: "
                f"{ours['bits_per_param']:.3f} / {nb:.3f} = **{ours['bits_per_param'] / nb:.3f}x**\n"
            )
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
