"""The data-free default of ``nnpress.compress`` against NNCodec's defaults, side by side in one run.

    python bench/python/bench_default.py [--models cnn,mlp,heavy,minilm] [--threads 2] [--no-sweep]
                                         [--sweep-method trellis] [--sweep 24,20,16]
                                         [--opt-qp] [--ablation] [--json out.json]
    python bench/python/bench_default.py --replot bench/results/bench_default.json   # PNGs only

No calibration data anywhere: every nnpress row is ``nnpress.compress(state_dict, file, config)``
with no importance, no Fisher, no tuning; sizes are the real ``.nnp`` file bytes (header, tensor
table and raw biases included) and NNCodec's whole bitstream (``nnc.compress`` via
``peers.nncodec_compress_state_dict``: qp -38, dependent quantization, lambda_scale 0, no opt_qp —
its defaults). Fidelity of the decoded model:

- all-MiniLM-L6-v2: mean and min cosine between the original and the decoded model's sentence
  embeddings over all 52 sentences of ``minilm.SENTENCES`` (nothing is calibrated on them);
  The same two numbers over the even-numbered and the odd-numbered sentences are reported too
  ("tune" / "held"), for choices made on one half;
- digits CNN / MLP (``nnpress.demo_models``, trained here in seconds): top-1 accuracy on the 450
  held-out digits, and the mean KL divergence of the decoded model's predictions from the
  original's (top-1 moves in steps of one image, 0.22 points; KL is the finer ruler);
- "heavy": the digits MLP with a heavy-tailed fc1 (``heavy_tail.heavy_tailed_state_dict``: three
  weights on input pixels that are 0 in every image made so large that fc1's std is 40x its bulk's,
  their bias entries cancelling them; the same function on every image), same fidelity measures.

Rows: NNCodec default; nnpress default (``CodecConfig()``); the default before issue 15 (steps
from each tensor's std: ``CodecConfig(spread="std")``); the fine-roles configuration (biases and
norms quantized near-losslessly: ``CodecConfig(lossless_roles=("buffer", "other"))``); that with
the other method forced. Then, unless ``--no-sweep``, the fine-roles family over its knob
(``rel_step``, method ``--sweep-method``, default "auto") against NNCodec's qp sweep (``--opt-qp``:
also with opt_qp, NNCodec's best setting on MiniLM), and nnpress's bits/param at NNCodec's
fidelity (interpolated along the nnpress curve), i.e. at matched fidelity. ``--ablation`` adds
the same family with ``spread="std"`` over the same knob, compared at equal fidelity. Encode time = wall seconds of
the whole ``compress`` call (load, quantize, code, verify, atomic write) / of ``nnc.compress``,
and the CPU seconds of this process during it (all threads; steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import nnpress  # noqa: E402
import peers  # noqa: E402
from nnpress.config import CodecConfig  # noqa: E402

OLD_DEFAULT = CodecConfig(spread="std")  # the default before issue 15
FINE = CodecConfig(lossless_roles=("buffer", "other"))  # biases and norms near-lossless
SWEEP = (1 / 32, 1 / 28, 1 / 24, 1 / 20, 1 / 16, 1 / 12, 1 / 8, 1 / 6)
NNC_SWEEP = (-40, -38, -36, -34, -32, -30)
NNC_OPT_QP_SWEEP = (-44, -42, -41, -40, -38, -36)  # opt_qp: coarser qp for big tensors (bench_rd.py)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def digits_setup(kind):
    import torch

    from nnpress.demo_models import build_digits_model, evaluate_accuracy, load_digits_data, train_digits_model

    name = f"digits {kind}"
    heavy = kind == "heavy"
    if heavy:
        import heavy_tail

        kind, name = "mlp", "digits MLP, heavy-tailed fc1"
    model = train_digits_model(kind, seed=0)
    data = load_digits_data()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if heavy:
        sd, info = heavy_tail.heavy_tailed_state_dict(sd)
        log(f"  heavy-tailed fc1: {info}")
        model = build_digits_model(kind)
        model.load_state_dict(sd)
        model.eval()
    x = torch.from_numpy(data.x_test)
    with torch.no_grad():
        lp_ref = torch.log_softmax(model(x), -1)

    def fidelity(state):
        m = build_digits_model(kind)
        m.load_state_dict(
            {k: torch.as_tensor(np.asarray(v, np.float32)).reshape(sd[k].shape) for k, v in state.items()}
        )
        m.eval()
        with torch.no_grad():
            lp = torch.log_softmax(m(x), -1)
        kl = float((lp_ref.exp() * (lp_ref - lp)).sum(-1).mean())
        return {"top1": evaluate_accuracy(m, data.x_test, data.y_test), "kl": kl}

    base = fidelity(sd)
    return {"name": name, "sd": sd, "fidelity": fidelity, "base": base, "key": "kl", "higher_is_better": False}


def minilm_setup():
    import minilm

    model, _ = minilm.load_minilm()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ref = minilm.embed(model, minilm.SENTENCES)

    def fidelity(state):
        emb = minilm.embed(state, minilm.SENTENCES)
        mean, mn = minilm.cosine_fidelity(ref, emb)
        tune = minilm.cosine_fidelity(ref[0::2], emb[0::2])
        held = minilm.cosine_fidelity(ref[1::2], emb[1::2])
        return {"mean_cos": mean, "min_cos": mn, "tune": tune, "held": held}

    return {
        "name": "all-MiniLM-L6-v2",
        "sd": sd,
        "fidelity": fidelity,
        "base": {"mean_cos": 1.0, "min_cos": 1.0},
        "key": "mean_cos",
        "higher_is_better": True,
    }


def nnpress_row(setup, label, config, tmp):
    path = os.path.join(tmp, "m.nnp")
    c0 = time.process_time()
    rep = nnpress.compress(setup["sd"], path, config)
    cpu = time.process_time() - c0
    state = nnpress.decompress(path, as_numpy=True)
    methods = sorted({t.method for t in rep.tensors if t.storage == "quantized"})
    row = {
        "codec": "nnpress",
        "label": label,
        "bytes": rep.file_bytes,
        "bits_per_param": rep.bits_per_param,
        "encode_s": rep.times["total"],
        "encode_cpu_s": cpu,
        "methods": methods,
        **setup["fidelity"](state),
    }
    os.remove(path)
    return row


def nncodec_row(setup, label, qp=-38, **kw):
    c0 = time.process_time()
    data, info = peers.nncodec_compress_state_dict(setup["sd"], qp=qp, **kw)  # default: DQ, lambda 0
    cpu = time.process_time() - c0
    rec = peers.nncodec_decompress(data, shapes=info["shapes"])
    state = {k: rec.get(k, v.numpy()) for k, v in setup["sd"].items()}
    n = sum(v.numel() for v in setup["sd"].values())
    return {
        "codec": "NNCodec",
        "label": label,
        "qp": qp,
        "bytes": len(data),
        "bits_per_param": 8 * len(data) / n,
        "encode_s": info["encode_s"],
        "encode_cpu_s": cpu,
        **setup["fidelity"](state),
    }


def fmt_fid(r):
    if "mean_cos" in r:
        halves = "".join(f"; {h} {r[h][0]:.5f} / {r[h][1]:.5f}" for h in ("tune", "held") if h in r)
        return f"{r['mean_cos']:.5f} / {r['min_cos']:.5f}{halves}"
    return f"{100 * r['top1']:.2f} % / {r['kl']:.2e}"


def bits_at(curve, key, target, higher_is_better):
    """nnpress bits/param at fidelity ``target`` by linear interpolation in (log error, bits) between
    the two sweep points that bracket it (error = 1 - cos or KL); None if not bracketed."""

    def err(v):
        return max(1.0 - v, 1e-12) if higher_is_better else max(v, 1e-12)

    pts = sorted(curve, key=lambda r: r["bits_per_param"])
    t = math.log(err(target))
    for a, b in zip(pts, pts[1:]):
        ea, eb = math.log(err(a[key])), math.log(err(b[key]))
        if (ea - t) * (eb - t) <= 0 and ea != eb:
            return a["bits_per_param"] + (t - ea) / (eb - ea) * (b["bits_per_param"] - a["bits_per_param"])
    return None


def run(setup, threads, sweep, opt_qp, ablation, sweep_method="auto", sweep_rels=SWEEP):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(nncodec_row(setup, "NNCodec default: qp -38, DQ"))
        log(
            f"  {rows[-1]['label']}: {rows[-1]['bits_per_param']:.3f} b/p {fmt_fid(rows[-1])} "
            f"{rows[-1]['encode_s']:.2f}s"
        )
        default = CodecConfig(threads=threads)
        fine = FINE.replace(threads=threads)
        for label, cfg in (
            ("nnpress default: CodecConfig()", default),
            ("before issue 15: CodecConfig(spread='std')", OLD_DEFAULT.replace(threads=threads)),
            ("fine roles: lossless_roles=(buffer, other)", fine),
        ):
            rows.append(nnpress_row(setup, label, cfg, tmp))
            log(
                f"  {label}: {rows[-1]['bits_per_param']:.3f} b/p {fmt_fid(rows[-1])} {rows[-1]['encode_s']:.2f}s "
                f"{rows[-1]['methods']}"
            )
        weights = [m for m in rows[-1]["methods"] if m != "nearest"] or ["nearest"]
        other = "nearest" if weights == ["trellis"] else "trellis"
        label = f"fine roles, method={other}"
        rows.append(nnpress_row(setup, label, fine.replace(method=other), tmp))
        log(f"  {label}: {rows[-1]['bits_per_param']:.3f} b/p {fmt_fid(rows[-1])} {rows[-1]['encode_s']:.2f}s")
        curve, nnc_curve = [], []
        family = fine.replace(method=sweep_method)
        if sweep:
            for rel in sweep_rels:
                r = nnpress_row(setup, f"rel_step 1/{1 / rel:.0f}", family.replace(rel_step=rel), tmp)
                r["rel_step"] = rel
                curve.append(r)
                log(f"  nnpress {r['label']}: {r['bits_per_param']:.3f} b/p {fmt_fid(r)}")
            for qp in NNC_SWEEP:
                r = rows[0] if qp == -38 else nncodec_row(setup, f"qp {qp}", qp)
                nnc_curve.append(r)
                log(f"  NNCodec qp {qp}: {r['bits_per_param']:.3f} b/p {fmt_fid(r)}")
            curves = {"NNCodec DQ (qp sweep)": nnc_curve}
            if opt_qp:
                curves["NNCodec DQ opt_qp"] = []
                for qp in NNC_OPT_QP_SWEEP:
                    r = nncodec_row(setup, f"opt_qp qp {qp}", qp, opt_qp=True)
                    curves["NNCodec DQ opt_qp"].append(r)
                    log(f"  NNCodec opt_qp qp {qp}: {r['bits_per_param']:.3f} b/p {fmt_fid(r)}")
        old_curve = []
        if ablation:  # the same family with steps from each tensor's std, same knob values
            for rel in sweep_rels:
                cfg = family.replace(rel_step=rel, spread="std")
                r = nnpress_row(setup, f"spread std, rel_step 1/{1 / rel:.0f}", cfg, tmp)
                old_curve.append(r)
                log(f"  {r['label']}: {r['bits_per_param']:.3f} b/p {fmt_fid(r)}")
    return rows, curve, (curves if sweep else {}), old_curve


def plot(name, res, out_dir):
    """PNG: the fine-roles family, the same with spread std, NNCodec's qp sweeps, the two default points.
    y = 1 - mean cosine (MiniLM) or KL (digits), log scale: lower is more faithful."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plot")
        return None
    lm = "mean_cos" in res["rows"][0]

    def err(r):
        return max(1.0 - r["mean_cos"], 1e-7) if lm else max(r["kl"], 1e-9)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = [("nnpress fine roles, rel_step sweep", res["sweep"], "-o")]
    curves += [(k, v, "--s") for k, v in res["nncodec_sweeps"].items()]
    curves += [("same, spread std, sweep", res.get("previous") or [], ":^")]
    for label, pts, style in curves:
        if pts:
            pts = sorted(pts, key=lambda r: r["bits_per_param"])
            ax.plot([r["bits_per_param"] for r in pts], [err(r) for r in pts], style, ms=3, label=label)
    for r, mk in ((res["rows"][0], "X"), (res["rows"][1], "*")):
        ax.plot([r["bits_per_param"]], [err(r)], mk, ms=12, color="k", label=r["label"])
    ax.set_yscale("log")
    ax.set_xlabel("bits per parameter (whole file)")
    ax.set_ylabel("1 - mean cosine (52 sentences)" if lm else "mean KL of predictions (450 digits)")
    ax.set_title(f"{name}: data-free nnpress default vs NNCodec 2.1.3 (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out_dir) / f"default_{name.replace(' ', '_').replace('-', '_').lower()}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cnn,mlp,heavy,minilm")
    ap.add_argument(
        "--sweep-method",
        default="auto",
        choices=("auto", "nearest", "trellis"),
        help="method of the swept fine-roles family",
    )
    ap.add_argument("--sweep", default=None, help="rel_step denominators of the sweep, e.g. 24,20,16")
    ap.add_argument("--threads", type=int, default=None, help="nnpress threads (default: all cores)")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--opt-qp", action="store_true", help="also sweep NNCodec with opt_qp (its best on MiniLM)")
    ap.add_argument(
        "--ablation", action="store_true", help="also sweep the family with spread=std and compare at equal fidelity"
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--plots", default=str(HERE.parent / "plots"), help="folder for the PNG curves")
    ap.add_argument("--replot", metavar="JSON", help="only redraw the plots from an earlier --json output")
    args = ap.parse_args()
    if args.replot:
        for name, res in json.loads(Path(args.replot).read_text()).items():
            print(plot(name, res, args.plots))
        return
    import torch

    torch.set_num_threads(1)
    peers.import_nncodec()
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "?"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; nnpress "
        f"{nnpress.__version__} ({commit}); command: python bench/python/bench_default.py {' '.join(sys.argv[1:])}\n"
    )
    out = {}
    for m in args.models.split(","):
        setup = minilm_setup() if m == "minilm" else digits_setup(m)
        log(f"== {setup['name']}")
        rels = SWEEP if args.sweep is None else tuple(1 / float(x) for x in args.sweep.split(","))
        rows, curve, nnc_curves, old_curve = run(
            setup, args.threads, not args.no_sweep, args.opt_qp, args.ablation, args.sweep_method, rels
        )
        out[setup["name"]] = {"rows": rows, "sweep": curve, "nncodec_sweeps": nnc_curves, "previous": old_curve}
        if curve:
            log(f"  plot: {plot(setup['name'], out[setup['name']], args.plots)}")
        lm = "mean_cos" in rows[0]
        print(f"### {setup['name']} (original: {fmt_fid({**setup['base']})})\n")
        print(
            f"| codec / configuration | bytes | bits/param | vs NNCodec default | "
            f"{'cosine mean / min' if lm else 'top-1 / KL'} | encode s wall (CPU) |"
        )
        print("|---|---|---|---|---|---|")
        ref = rows[0]["bits_per_param"]
        for r in rows:
            name = r["label"] + (f" ({', '.join(r['methods'])})" if r.get("methods") else "")
            print(
                f"| {name} | {r['bytes']:,} | {r['bits_per_param']:.3f} | {r['bits_per_param'] / ref:.3f}x | "
                f"{fmt_fid(r)} | {r['encode_s']:.2f} ({r['encode_cpu_s']:.2f}) |"
            )
        if curve:
            print(
                f"\nMatched fidelity ({setup['key']}): NNCodec's qp sweep against the fine-roles family "
                f"(method {args.sweep_method}, rel_step {', '.join(f'1/{1 / r:.0f}' for r in rels)}), "
                f"nnpress interpolated:\n"
            )
            print(
                f"| NNCodec setting | NNCodec bits/param | {setup['key']} | nnpress bits/param at that "
                f"{setup['key']} | ratio |"
            )
            print("|---|---|---|---|---|")
            for r in (r for c in nnc_curves.values() for r in c):
                b = bits_at(curve, setup["key"], r[setup["key"]], setup["higher_is_better"])
                v = f"{r[setup['key']]:.5f}" if lm else f"{r[setup['key']]:.2e}"
                bb = "—" if b is None else f"{b:.3f}"
                ratio = "—" if b is None else f"{b / r['bits_per_param']:.3f}x"
                name = f"opt_qp, qp {r['qp']}" if r["label"].startswith("opt_qp") else f"qp {r['qp']}"
                print(f"| {name} | {r['bits_per_param']:.3f} | {v} | {bb} | {ratio} |")
            print("\nThe fine-roles family:\n")
            print(f"| rel_step | bits/param | {'cosine mean / min' if lm else 'top-1 / KL'} |")
            print("|---|---|---|")
            for r in curve:
                print(f"| {r['label'][9:]} | {r['bits_per_param']:.3f} | {fmt_fid(r)} |")
        if old_curve and curve:
            print(
                "\nAblation: the family against the same with spread='std' (steps from each tensor's std) "
                "at equal fidelity (std family interpolated):\n"
            )
            print(f"| rel_step | robust bits/param | {setup['key']} | spread std bits/param there | ratio |")
            print("|---|---|---|---|---|")
            for r in curve:
                b = bits_at(old_curve, setup["key"], r[setup["key"]], setup["higher_is_better"])
                v = f"{r[setup['key']]:.5f}" if lm else f"{r[setup['key']]:.2e}"
                bb = "—" if b is None else f"{b:.3f}"
                ratio = "—" if b is None else f"{r['bits_per_param'] / b:.3f}x"
                print(f"| {r['label'][9:]} | {r['bits_per_param']:.3f} | {v} | {bb} | {ratio} |")
        print()
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
