"""The smallest file for a fidelity budget, through ``nnpress.compress(calibration=, budget=)`` /
``nnpress.budget.compress_to_budget``, side by side with NNCodec 2.1.3 in one run (issue 14).

    python bench/python/bench_budget.py minilm [--cli [--cli-python PY]] [--threads 2]
    python bench/python/bench_budget.py digits [--models cnn,mlp] [--prune auto|none|0.6]
    python bench/python/bench_budget.py readme            # the README's feedback snippet on MiniLM

minilm: the calibration file is ``minilm.SENTENCES`` + ``minilm.CALIBRATION_EXTRA`` (230 sentences,
one per line); the search fits on part of it and scores the budget (mean cos >= 0.999) on the
rest (the split is in the report). The written file is then scored on the 110 sentences of
``bench/data/minilm_test_sentences.txt``, which are in neither the calibration file nor anything
any setting of nnpress was chosen on. NNCodec (qp -38 DQ, its default, and opt_qp at qp -41/-40)
is scored on the same test sentences. ``--cli`` runs the one command ``nnpress compress <minilm
dir> out.nnp --calibration sentences.txt --budget cos_mean=0.999`` in a subprocess (needs the CLI's
calibration support) instead of building the Task here. Peak memory: ru_maxrss of the process that
ran the search.

digits: the digits CNN/MLP (bench_rd.py), calibration = 16 batches of 64 training images (fit),
held-out = the 450 test images with labels, budget accuracy_drop <= 0.2 points. NNCodec's smallest
file with at most the same drop: DQ over qp -44..-20 and opt_qp over the same range.

readme: the README's error-feedback snippet as written (raw per-weight Fisher as importance) on
MiniLM (26 even sentences calibrate, 26 odd score), with and without the encode path's importance
conditioning, at fixed relative steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402

import nnpress  # noqa: E402

TEST_SENTENCES = HERE.parent / "data" / "minilm_test_sentences.txt"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------------
# MiniLM
# ------------------------------------------------------------------------------------------------


class Pooled:  # built lazily (torch)
    pass


def minilm_task(sentences: list[str], heldout_fraction: float = 0.2, seed: int = 0):
    """A text-embedding Task by hand (mean-pooled MiniLM), the split seeded."""
    import torch

    import minilm
    from nnpress.calibration import Task

    model, tok = minilm.load_minilm()

    class PooledModel(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            msk = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * msk).sum(1) / msk.sum(1)

    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(heldout_fraction * len(sentences)))
    held = [sentences[i] for i in sorted(order[:n_held])]
    fit = [sentences[i] for i in sorted(order[n_held:])]

    def batches(texts, size):
        out = []
        for i in range(0, len(texts), size):
            enc = tok(texts[i : i + size], padding=True, truncation=True, max_length=256, return_tensors="pt")
            out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        return out

    pm = PooledModel(model).eval()
    task = Task(
        pm,
        "text-embedding",
        batches(fit, 4),
        batches(held, 16),
        output_fn=lambda o: o,
        fisher_output="gaussian",
        names={k: k[2:] for k in pm.state_dict()},
        split={"fit": len(fit), "heldout": len(held), "seed": seed, "unit": "sentences"},
    )
    return task, model


def run_minilm(args):
    import torch

    import minilm

    torch.set_num_threads(args.threads)
    cal = list(minilm.SENTENCES) + list(minilm.CALIBRATION_EXTRA)
    test = [s.strip() for s in TEST_SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    assert not set(test) & set(cal), "test sentences overlap the calibration"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; load {os.getloadavg()}; nnpress "
        f"{nnpress.__version__}; torch {torch.__version__}; calibration {len(cal)} sentences; test {len(test)}\n"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench_budget_"))
    out = tmp / "minilm.nnp"
    if args.cli:
        cal_file = tmp / "sentences.txt"
        cal_file.write_text("\n".join(cal) + "\n", encoding="utf-8")
        cmd = [
            args.cli_python or sys.executable, "-m", "nnpress.cli", "compress", minilm.model_path(), str(out),
            "--calibration", str(cal_file), "--budget", "cos_mean=0.999", "--json", str(tmp / "report.json"),
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1")
        )
        wall = time.perf_counter() - t0
        log(proc.stdout[-3000:], proc.stderr[-3000:])
        if proc.returncode != 0:
            raise SystemExit(f"CLI failed ({proc.returncode})")
        peak = next(
            (float(x.split(":")[1]) / 1024 for x in proc.stderr.splitlines() if "Maximum resident set size" in x), None
        )
        report = json.loads((tmp / "report.json").read_text())
        how = "CLI: " + " ".join(cmd[2:])
    else:
        task, _ = minilm_task(cal, seed=args.seed)
        t0 = time.perf_counter()
        rep = nnpress.budget.compress_to_budget(
            task, out, "cos_mean=0.999", seed=args.seed, config=nnpress.CodecConfig(threads=args.threads),
            progress=lambda s, d, n: log(f"  [{time.perf_counter() - t0:6.1f}s] {s} {d}/{n}"),
        )  # fmt: skip
        wall = time.perf_counter() - t0
        peak = peak_mib()
        report = rep.to_dict()
        how = "API: nnpress.budget.compress_to_budget(task, out, 'cos_mean=0.999') (Task built in bench_budget.py)"
    model, _ = minilm.load_minilm()
    ref = minilm.embed(model, test)
    dec = nnpress.decompress(out, as_numpy=True)
    mean_cos, min_cos = minilm.cosine_fidelity(ref, minilm.embed(dec, test))
    n_params = report["params"]
    bpp = 8 * report["file_bytes"] / n_params
    print(f"{how}\n")
    print(f"split: {report['split']}; times: { {k: round(v, 1) for k, v in report['times'].items()} }")
    print(f"wall {wall:.1f}s, peak memory {peak:.0f} MiB\n")
    print("| point | rel step | bits/param | held-out mean cos | held-out min cos | seconds |")
    print("|---|---|---|---|---|---|")
    for i, p in enumerate(report["points"]):
        mark = " (chosen)" if i == report["chosen"] else ""
        print(
            f"| {i}{mark} | {p['setting']['rel_step']:.4f} | {p['bits_per_param']:.4f} | "
            f"{p['metrics']['cos_mean']:.5f} | {p['metrics']['cos_min']:.5f} | {p['seconds']:.1f} |"
        )
    print()
    w = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    rows = [("nnpress, budget cos_mean=0.999", bpp, mean_cos, min_cos)]
    if not args.no_peers:
        import peers

        peers.import_nncodec()
        for label, qp, kw in (
            ("NNCodec DQ qp -38 (default)", -38, {"use_dq": True}),
            ("NNCodec DQ opt_qp qp -41", -41, {"use_dq": True, "opt_qp": True}),
            ("NNCodec DQ opt_qp qp -40", -40, {"use_dq": True, "opt_qp": True}),
        ):
            data, info = peers.nncodec_compress_state_dict(w, qp=qp, **kw)
            rec = peers.nncodec_decompress(data, shapes=info["shapes"])
            state = {k: (rec[k] if k in rec else v) for k, v in w.items()}
            mc, mn = minilm.cosine_fidelity(ref, minilm.embed(state, test))
            rows.append((label, 8 * len(data) / n_params, mc, mn))
            log(f"  {label}: {rows[-1][1]:.4f} b/p, test cos {mc:.5f}")
    print(f"Test sentences ({len(test)}, {TEST_SENTENCES.name}; never calibrated or tuned on):\n")
    print("| file | bits/param | test mean cos | test min cos | / NNCodec qp -38 DQ |")
    print("|---|---|---|---|---|")
    base = rows[1][1] if len(rows) > 1 else None
    for label, b, mc, mn in rows:
        ratio = f"{b / base:.3f}×" if base else "—"
        print(f"| {label} | {b:.4f} | {mc:.5f} | {mn:.5f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"report": report, "rows": rows, "wall": wall, "peak_mib": peak}, indent=1)
        )


# ------------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------------


def digits_task(kind: str):
    import torch

    from nnpress.calibration import Task
    from nnpress.demo_models import calibration_batches, load_digits_data, train_digits_model

    model = train_digits_model(kind, seed=0)
    data = load_digits_data()
    task = Task(
        model,
        "module",
        calibration_batches(16, 64, data=data),
        [torch.from_numpy(np.ascontiguousarray(data.x_test))],
        output_fn=lambda o: o,
        fisher_output="classifier",
        labels=[torch.from_numpy(data.y_test)],
        split={"fit": 16 * 64, "heldout": len(data.y_test), "fit_from": "training split", "heldout_from": "test split"},
    )
    return task, model, data


def run_digits(args):
    import torch

    import bench_rd
    import peers

    torch.set_num_threads(1)
    prune = None if args.prune == "none" else (args.prune if args.prune == "auto" else float(args.prune))
    if not args.no_peers:
        peers.import_nncodec()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; load {os.getloadavg()}; "
        f"nnpress {nnpress.__version__}\n"
    )
    for kind in args.models.split(","):
        task, _, _ = digits_task(kind)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            rep = nnpress.budget.compress_to_budget(
                task, Path(tmp) / "m.nnp", "accuracy_drop=0.2", prune=prune, prune_by=args.prune_by, seed=args.seed
            )
            wall = time.perf_counter() - t0
        base = task.evaluate(None)
        print(f"### digits {kind}: budget accuracy_drop <= 0.2 on the 450 test images\n")
        print(rep.table() + "\n")
        print(f"written: {rep.bits_per_param:.4f} bits/param, held-out {rep.heldout}, {wall:.1f}s, times {rep.times}\n")
        if args.no_peers:
            continue
        setup = bench_rd.digits_setup(kind, with_fisher=False)
        best = {}
        for label, kw in (("NNCodec DQ", {"use_dq": True}), ("NNCodec DQ opt_qp", {"use_dq": True, "opt_qp": True})):
            for qp in range(-44, -19, 2):
                p = bench_rd.nncodec_point(setup, qp, **kw)
                drop = 100 * (setup["base"] - p["metric"])
                if drop <= 0.2 + 1e-9 and (label not in best or p["bits_per_param"] < best[label]["bits_per_param"]):
                    best[label] = dict(p, drop=drop)
            log(f"  {kind} {label}: smallest meeting {best.get(label)}")
        print("| file | bits/param | test top-1 drop (points) | / nnpress |")
        print("|---|---|---|---|")
        print(f"| nnpress budget | {rep.bits_per_param:.4f} | {rep.heldout['accuracy_drop']:.3f} | 1 |")
        for label, p in best.items():
            print(
                f"| {label} qp {p['qp']} | {p['bits_per_param']:.4f} | {p['drop']:.3f} | "
                f"{p['bits_per_param'] / rep.bits_per_param:.2f}× |"
            )
        if best:
            smallest = min(p["bits_per_param"] for p in best.values())
            print(f"\nnnpress / NNCodec's smallest meeting the budget: {rep.bits_per_param / smallest:.3f}×\n")
        del base


# ------------------------------------------------------------------------------------------------
# the README's feedback snippet
# ------------------------------------------------------------------------------------------------


def run_readme(args):
    import torch

    import bench_rd
    from nnpress import encode, tune

    torch.set_num_threads(args.threads)
    setup = bench_rd.minilm_setup()
    w = setup["weights"]
    H = nnpress.fisher_hessians(setup["fisher_model"], setup["batches"], output="gaussian")
    G = nnpress.fisher_row_hessians(setup["fisher_model"], setup["batches"], output="gaussian")
    H = {k[2:]: v for k, v in H.items()}
    G = {k[2:]: v for k, v in G.items()}
    sens, imp = tune.sensitivities_from_fisher(setup["fisher"])
    scales = tune.channel_scales_from_importance(imp)
    g = tune.default_step(w, rel=1.0)
    n = sum(v.size for v in w.values())
    conditioned = encode.condition_importance
    print("| importance conditioning | rel step | bits/param | mean cos (26 odd sentences) | min cos |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, fn in (("none (as before)", lambda a, s, r, nm="": a), ("encode path (now)", conditioned)):
            encode.condition_importance = fn
            for rel in [float(x) for x in args.steps.split(",")]:
                plan = tune.allocate_steps(w, g * rel, sens, importance=imp, channel_scales=scales, hessians=H)
                rep = nnpress.compress(
                    w, Path(tmp) / "m.nnp", nnpress.CodecConfig(plan=plan), importance=imp, hessians=H, row_hessians=G
                )
                dec = nnpress.decompress(Path(tmp) / "m.nnp", as_numpy=True)
                cos = setup["evaluate"]({k: dec[k] for k in w})
                print(
                    f"| {label} | {rel} | {8 * rep.file_bytes / n:.3f} | {cos:.5f} | {setup['last']['min']:.4f} |",
                    flush=True,
                )
    encode.condition_importance = conditioned


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("minilm", "digits", "readme"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cli", action="store_true", help="minilm: through the nnpress compress command")
    ap.add_argument(
        "--cli-python",
        default=None,
        help="minilm --cli: the Python that runs the command (an environment without NNCodec's torchvision)",
    )
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--prune", default="auto")
    ap.add_argument("--prune-by", default="fisher", choices=("fisher", "magnitude"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default="0.085", help="readme: relative steps")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    {"minilm": run_minilm, "digits": run_digits, "readme": run_readme}[args.what](args)


if __name__ == "__main__":
    main()
