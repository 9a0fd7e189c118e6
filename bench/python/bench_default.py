"""The data-free default of ``nnpress.compress`` against the previous default and NNCodec, in one run.

    python bench/python/bench_default.py [--models cnn,mlp,heavy,minilm] [--threads 2]
                                         [--sweep 28,24,20,16] [--opt-qp] [--json out.json]
    /work/venvs/nnc/bin/python bench/python/bench_default.py --nncodec-only --opt-qp   # fill the cache
    python bench/python/bench_default.py --replot bench/results/bench_default.json     # PNGs only

No calibration data anywhere: every nnpress row is ``nnpress.compress(state_dict, file, config)``
with no importance, no Fisher, no tuning; sizes are the real ``.nnp`` file bytes (header, tensor
table and every stored tensor included) and NNCodec's whole bitstream (``nnc.compress`` via
``peers.nncodec_compress_state_dict``: qp -38, dependent quantization, lambda_scale 0, no opt_qp —
its defaults; ``--opt-qp`` adds its best setting, opt_qp, swept over qp).

Two disjoint sets of inputs per model. The **tune** set is the one the default's knobs were chosen
on; the **report** set is the one every fidelity in the tables is measured on, and nothing was
chosen on it:

- all-MiniLM-L6-v2: tune = the 178 sentences of ``minilm.CALIBRATION_EXTRA``; report = the 52
  sentences of ``minilm.SENTENCES`` and, as a second report set, the 110 sentences of
  ``bench/data/minilm_test_sentences.txt`` (the budget bench's test set). Fidelity = mean and min
  cosine between the original and the decoded model's sentence embeddings;
- digits CNN / MLP (``nnpress.demo_models``, trained here in seconds on the 1,347 training digits):
  tune = the training digits, report = the 450 held-out test digits. Fidelity = top-1 accuracy and
  the mean KL divergence of the decoded model's predictions from the original's (top-1 moves in
  steps of 0.22 points; KL is the finer ruler);
- "heavy": the digits MLP with a heavy-tailed fc1 (``heavy_tail.heavy_tailed_state_dict``: three
  weights on always-zero input pixels made so large that fc1's std is 40x its bulk's, their bias
  entries cancelling them), same sets and measures.

Rows: NNCodec default (qp -38, DQ); unless ``--no-old``, the default before issue 15, items 1-2
(``OLD_DEFAULT``: nearest rounding above 2^20 quantized weights, rel_step 1/24, biases and norms
stored exactly); the default (``CodecConfig()``) on the state_dict; ``CodecConfig(synthetic_feedback=True)``
(opt-in) on the ``nn.Module`` (synthetic-input error feedback, ``nnpress.synthetic``; its estimation
time is in the encode time), with ``--module-sweep`` its
family over ``rel_step``; unless ``--no-probe``, ``CodecConfig(probe=True)`` with the
``nn.Module`` as the source (the data-free probe on synthetic inputs; its time is in the encode
time). Unless ``--no-sweep``, the default's family over ``rel_step`` against
NNCodec's qp sweep (and opt_qp), with nnpress's bits/param at each NNCodec point's report-set
fidelity (interpolated along the nnpress curve), i.e. at matched fidelity; and the family's
tune-set fidelity against NNCodec qp -38's, which is how the default ``rel_step`` was chosen.

NNCodec needs its own venv: ``--nncodec-only`` (run with NNCodec's python) computes its rows and
stores them, fidelity included, in ``--nncodec-cache``; a later run reads them from there (rows
absent from the cache are computed if NNCodec imports, else the run stops and says so). Encode
time = wall seconds of the whole ``compress`` call (load, quantize, code, verify, atomic write) /
of ``nnc.compress``, and the CPU seconds of this process during it (all threads).
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

# the default before issue 15 (items 1-2): "auto" = rounding above 2^20 weights, steps 1/24 of the
# spread, biases and norms stored exactly
OLD_DEFAULT = dict(rel_step=1 / 24, auto_trellis_max=1 << 20, lossless_roles=("bias", "norm", "buffer", "other"))
SWEEP = (1 / 28, 1 / 24, 1 / 20, 1 / 16)
NNC_SWEEP = (-40, -38, -36, -34, -32)
NNC_OPT_QP_SWEEP = (-42, -41, -40, -38, -36)  # opt_qp: coarser qp for big tensors (bench_rd.py)
NNC_CACHE = "/tmp/nnpress_bench_default_nncodec.json"
TEST_SENTENCES = HERE.parent / "data" / "minilm_test_sentences.txt"


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
    sets = {"tune": (data.x_train, data.y_train), "report": (data.x_test, data.y_test)}
    with torch.no_grad():
        ref = {k: torch.log_softmax(model(torch.from_numpy(x)), -1) for k, (x, _) in sets.items()}

    def fidelity(state):
        m = build_digits_model(kind)
        m.load_state_dict(
            {k: torch.as_tensor(np.asarray(v, np.float32)).reshape(sd[k].shape) for k, v in state.items()}
        )
        m.eval()
        out = {}
        for k, (x, y) in sets.items():
            with torch.no_grad():
                lp = torch.log_softmax(m(torch.from_numpy(x)), -1)
            kl = float((ref[k].exp() * (ref[k] - lp)).sum(-1).mean())
            top1 = evaluate_accuracy(m, x, y)
            out.update({"kl": kl, "top1": top1} if k == "report" else {"tune_kl": kl, "tune_top1": top1})
        return out

    return {"name": name, "sd": sd, "model": model, "fidelity": fidelity, "key": "kl", "higher_is_better": False}


def minilm_setup():
    import minilm

    model, _ = minilm.load_minilm()
    model.eval()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ref_tune = minilm.embed(model, minilm.CALIBRATION_EXTRA)
    ref = minilm.embed(model, minilm.SENTENCES)
    test = [t.strip() for t in TEST_SENTENCES.read_text(encoding="utf-8").splitlines() if t.strip()]
    ref_test = minilm.embed(model, test)

    def fidelity(state):
        mean, mn = minilm.cosine_fidelity(ref, minilm.embed(state, minilm.SENTENCES))
        tmean, tmn = minilm.cosine_fidelity(ref_tune, minilm.embed(state, minilm.CALIBRATION_EXTRA))
        xmean, xmn = minilm.cosine_fidelity(ref_test, minilm.embed(state, test))
        return {
            "mean_cos": mean, "min_cos": mn, "tune_mean_cos": tmean, "tune_min_cos": tmn,
            "test_mean_cos": xmean, "test_min_cos": xmn,
        }  # fmt: skip

    return {
        "name": "all-MiniLM-L6-v2",
        "sd": sd,
        "model": model,
        "fidelity": fidelity,
        "key": "mean_cos",
        "higher_is_better": True,
    }


SETUPS = {"minilm": minilm_setup, "cnn": lambda: digits_setup("cnn"), "mlp": lambda: digits_setup("mlp")}
SETUPS["heavy"] = lambda: digits_setup("heavy")


def nnpress_row(setup, label, config, tmp, source=None):
    path = os.path.join(tmp, "m.nnp")
    c0 = time.process_time()
    rep = nnpress.compress(setup["sd"] if source is None else source, path, config)
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
    log(f"  {label}: {row['bits_per_param']:.3f} b/p {fmt_fid(row)} {row['encode_s']:.2f}s {methods}")
    return row


class NNCodecRows:
    """NNCodec rows, computed once and kept in a JSON file (NNCodec lives in its own venv)."""

    def __init__(self, path):
        self.path = Path(path)
        self.rows = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, model_key, setup, qp=-38, opt_qp=False):
        key = f"{model_key}|qp={qp}|opt_qp={int(opt_qp)}"
        if key not in self.rows:
            self.rows[key] = self._compute(setup, qp, opt_qp)
            self.path.write_text(json.dumps(self.rows, indent=1))
        return dict(self.rows[key])

    @staticmethod
    def _compute(setup, qp, opt_qp):
        try:
            peers.import_nncodec()
        except ImportError as e:
            raise SystemExit(
                f"NNCodec row qp={qp} opt_qp={opt_qp} for {setup['name']} is not in the cache and NNCodec "
                f"does not import here ({e}); fill the cache with NNCodec's python: --nncodec-only"
            ) from None
        c0 = time.process_time()
        data, info = peers.nncodec_compress_state_dict(setup["sd"], qp=qp, opt_qp=opt_qp)  # DQ, lambda 0
        cpu = time.process_time() - c0
        rec = peers.nncodec_decompress(data, shapes=info["shapes"])
        state = {k: rec.get(k, v.numpy()) for k, v in setup["sd"].items()}
        n = sum(v.numel() for v in setup["sd"].values())
        label = f"NNCodec {'opt_qp ' if opt_qp else ''}qp {qp}, DQ"
        row = {
            "codec": "NNCodec",
            "label": label,
            "qp": qp,
            "opt_qp": opt_qp,
            "bytes": len(data),
            "bits_per_param": 8 * len(data) / n,
            "encode_s": info["encode_s"],
            "encode_cpu_s": cpu,
            **setup["fidelity"](state),
        }
        log(f"  {label}: {row['bits_per_param']:.3f} b/p {fmt_fid(row)} {row['encode_s']:.2f}s")
        return row


def fmt_fid(r, which="report"):
    if "mean_cos" in r:
        if which == "tune":
            return f"{r['tune_mean_cos']:.5f} / {r['tune_min_cos']:.5f}"
        if which == "test":
            return f"{r['test_mean_cos']:.5f} / {r['test_min_cos']:.5f}" if "test_mean_cos" in r else "—"
        return f"{r['mean_cos']:.5f} / {r['min_cos']:.5f}"
    if which == "tune":
        return f"{100 * r['tune_top1']:.2f} % / {r['tune_kl']:.2e}"
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


def run(model_key, setup, nnc, args, rels, module_rels=()):
    rows = [nnc.get(model_key, setup)]
    curve, nnc_curves, module_curve = [], {}, []
    threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_old:
            rows.append(
                nnpress_row(setup, "before issue 15 (items 1-2)", CodecConfig(threads=threads, **OLD_DEFAULT), tmp)
            )
        default = nnpress_row(setup, "nnpress default: CodecConfig(), state_dict", CodecConfig(threads=threads), tmp)
        rows.append(default)
        # the module itself as the source, with the opt-in synthetic-input error feedback
        synth = CodecConfig(synthetic_feedback=True, threads=threads)
        mod_default = nnpress_row(
            setup, "nnpress CodecConfig(synthetic_feedback=True), nn.Module", synth, tmp, setup["model"]
        )
        rows.append(mod_default)
        for rel in module_rels:
            if abs(rel - CodecConfig().rel_step) < 1e-12:
                r = dict(mod_default, label=f"rel_step 1/{1 / rel:.0f}")
            else:
                cfg = CodecConfig(synthetic_feedback=True, threads=threads, rel_step=rel)
                r = nnpress_row(setup, f"rel_step 1/{1 / rel:.0f}", cfg, tmp, setup["model"])
            r["rel_step"] = rel
            module_curve.append(r)
        if not args.no_probe:  # the module itself as the source: the probe runs on synthetic inputs
            cfg = CodecConfig(threads=threads, probe=True)
            rows.append(nnpress_row(setup, "default + probe=True (nn.Module source)", cfg, tmp, setup["model"]))
        if not args.no_sweep:
            default_rel = CodecConfig().rel_step
            for rel in rels:
                if abs(rel - default_rel) < 1e-12:
                    r = dict(default, label=f"rel_step 1/{1 / rel:.0f}")
                else:
                    cfg = CodecConfig(threads=threads, rel_step=rel)
                    r = nnpress_row(setup, f"rel_step 1/{1 / rel:.0f}", cfg, tmp)
                r["rel_step"] = rel
                curve.append(r)
            nnc_curves["NNCodec DQ (qp sweep)"] = [nnc.get(model_key, setup, qp) for qp in NNC_SWEEP]
            if args.opt_qp:
                nnc_curves["NNCodec DQ opt_qp"] = [nnc.get(model_key, setup, qp, True) for qp in NNC_OPT_QP_SWEEP]
        if module_curve and not nnc_curves:  # NNCodec's points that are in the cache
            pts = [nnc.rows.get(f"{model_key}|qp={qp}|opt_qp=0") for qp in NNC_SWEEP]
            nnc_curves["NNCodec DQ (qp sweep)"] = [dict(r) for r in pts if r is not None]
    return rows, curve, nnc_curves, module_curve


def plot(name, res, out_dir):
    """PNG: the default's family, NNCodec's qp sweeps, the default points. y = 1 - mean cosine
    (MiniLM) or KL (digits) on the report set, log scale: lower is more faithful."""
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
    curves = [("nnpress default, rel_step sweep", res["sweep"], "-o")]
    curves += [(k, v, "--s") for k, v in res["nncodec_sweeps"].items()]
    for label, pts, style in curves:
        if pts:
            pts = sorted(pts, key=lambda r: r["bits_per_param"])
            ax.plot([r["bits_per_param"] for r in pts], [err(r) for r in pts], style, ms=3, label=label)
    for r, mk in zip(res["rows"], ("X", "^", "*")):
        ax.plot([r["bits_per_param"]], [err(r)], mk, ms=12, color="k", label=r["label"])
    ax.set_yscale("log")
    ax.set_xlabel("bits per parameter (whole file)")
    ax.set_ylabel("1 - mean cosine (52 report sentences)" if lm else "mean KL of predictions (450 test digits)")
    ax.set_title(f"{name}: data-free nnpress default vs NNCodec 2.1.3 (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out_dir) / f"default_{name.replace(' ', '_').replace('-', '_').replace(',', '').lower()}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_tables(setup, rows, curve, nnc_curves, rels, module_curve=(), module_rels=()):
    lm = "mean_cos" in rows[0]
    fid = "cosine mean / min" if lm else "top-1 / KL"
    print(f"### {setup['name']}\n")
    test_col = " | test sentences (110) |" if lm else " |"
    print(
        f"| codec / configuration | bytes | bits/param | vs NNCodec default | {fid} (report set){test_col} "
        "tune set | encode s wall (CPU) |"
    )
    print("|---|---|---|---|---|---|---|" + ("---|" if lm else ""))
    ref = rows[0]["bits_per_param"]
    for r in rows:
        name = r["label"] + (f" ({', '.join(r['methods'])})" if r.get("methods") else "")
        test = f" {fmt_fid(r, 'test')} |" if lm else ""
        print(
            f"| {name} | {r['bytes']:,} | {r['bits_per_param']:.3f} | {r['bits_per_param'] / ref:.3f}x | "
            f"{fmt_fid(r)} |{test} {fmt_fid(r, 'tune')} | {r['encode_s']:.2f} ({r['encode_cpu_s']:.2f}) |"
        )
    print()
    for title, c, rs in (
        ("state_dict (no module to run)", curve, rels),
        ("nn.Module source", module_curve, module_rels),
    ):
        if c:
            print_family(setup, title, c, nnc_curves, rs, ref, rows[0])


def print_family(setup, title, curve, nnc_curves, rels, ref, nnc_row):
    lm = "mean_cos" in nnc_row
    fid = "cosine mean / min" if lm else "top-1 / KL"
    sets = ("report", "test") if lm else ("report",)
    for which in sets:
        key = setup["key"] if which == "report" else "test_mean_cos"
        what = "report set" if which == "report" else "test sentences"
        print(
            f"Matched fidelity ({key}, {what}), the default's family on a {title} "
            f"(rel_step {', '.join(f'1/{1 / r:.0f}' for r in rels)}) against NNCodec's sweeps, nnpress interpolated:\n"
        )
        print(f"| NNCodec setting | NNCodec bits/param | {key} | nnpress bits/param at that {key} | ratio |")
        print("|---|---|---|---|---|")
        for r in (r for c in nnc_curves.values() for r in c):
            if key not in r:
                continue
            b = bits_at(curve, key, r[key], setup["higher_is_better"])
            v = f"{r[key]:.5f}" if lm else f"{r[key]:.2e}"
            bb = "—" if b is None else f"{b:.3f}"
            ratio = "—" if b is None else f"{b / r['bits_per_param']:.3f}x"
            name = f"opt_qp, qp {r['qp']}" if r.get("opt_qp") else f"qp {r['qp']}"
            print(f"| {name} | {r['bits_per_param']:.3f} | {v} | {bb} | {ratio} |")
        print()
    print(
        f"The default's family on a {title}; tune-set fidelity against NNCodec qp -38's {fmt_fid(nnc_row, 'tune')}:\n"
    )
    tcol = f" {fid}, test sentences |" if lm else ""
    print(f"| rel_step | bits/param | vs NNCodec default | {fid}, tune set | {fid}, report set |{tcol}")
    print("|---|---|---|---|---|" + ("---|" if lm else ""))
    for r in curve:
        test = f" {fmt_fid(r, 'test')} |" if lm else ""
        print(
            f"| {r['label'][9:]} | {r['bits_per_param']:.3f} | {r['bits_per_param'] / ref:.3f}x | "
            f"{fmt_fid(r, 'tune')} | {fmt_fid(r)} |{test}"
        )
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cnn,mlp,heavy,minilm")
    ap.add_argument("--sweep", default=None, help="rel_step denominators of the sweep, e.g. 28,24,20,16")
    ap.add_argument(
        "--module-sweep",
        default="",
        help="rel_step denominators of a sweep with the nn.Module as the source, e.g. 20,22,24",
    )
    ap.add_argument("--threads", type=int, default=None, help="nnpress threads (default: all cores)")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--no-old", action="store_true", help="skip the row of the default before issue 15")
    ap.add_argument("--no-probe", action="store_true", help="skip the CodecConfig(probe=True) row")
    ap.add_argument("--opt-qp", action="store_true", help="also sweep NNCodec with opt_qp (its best setting)")
    ap.add_argument("--nncodec-cache", default=NNC_CACHE, help="JSON file of NNCodec rows (read and extended)")
    ap.add_argument("--nncodec-only", action="store_true", help="only compute NNCodec's rows into the cache")
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
    nnc = NNCodecRows(args.nncodec_cache)
    rels = SWEEP if args.sweep is None else tuple(1 / float(x) for x in args.sweep.split(","))
    if args.nncodec_only:
        for m in args.models.split(","):
            setup = SETUPS[m]()
            log(f"== {setup['name']}")
            for qp in NNC_SWEEP:
                nnc.get(m, setup, qp)
            for qp in NNC_OPT_QP_SWEEP if args.opt_qp else ():
                nnc.get(m, setup, qp, True)
        return
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
        setup = SETUPS[m]()
        log(f"== {setup['name']}")
        module_rels = tuple(1 / float(x) for x in args.module_sweep.split(",") if x)
        rows, curve, nnc_curves, module_curve = run(m, setup, nnc, args, rels, module_rels)
        out[setup["name"]] = {"rows": rows, "sweep": curve, "nncodec_sweeps": nnc_curves, "module_sweep": module_curve}
        if curve:
            log(f"  plot: {plot(setup['name'], out[setup['name']], args.plots)}")
        print_tables(setup, rows, curve, nnc_curves, rels, module_curve, module_rels)
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
