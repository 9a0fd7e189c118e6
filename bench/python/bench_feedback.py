"""Error feedback (GPTQ/OBS-style compensation inside each row, K-FAC column blocks) vs the best
quantizer without it vs NNCodec's best setting, side by side in one run (issue 3).

    python bench/python/bench_feedback.py [--threads 2] [--calibration even|extended]

all-MiniLM-L6-v2, fidelity = mean cosine of sentence embeddings on the 26 odd-numbered sentences of
``minilm.SENTENCES`` (never seen by the encoder); budget mean cos >= 0.999. Calibration (Fisher
diagonal and, for feedback, ``nnpress.fisher_hessians``): the 26 even-numbered sentences
(``--calibration even``, the protocol of bench_rd.py / bench_scales.py) or those plus the 178 of
``minilm.CALIBRATION_EXTRA`` (``extended``: 204 sentences; ``--extra N``: only the first N of them).

Every nnpress point is a real ``.nnp`` file (``nnpress.compress``, whole file) decoded by
``nnpress.decompress`` and scored. Variants, all trellis with Fisher step allocation + smoothed
per-weight importance + channel scales (strength 0.3) — the best variant without feedback:
  * "no feedback";
  * "+ error feedback": ``compress(hessians=K-FAC column blocks)``, ``allocate_steps(hessians=)``,
    damping ``CodecConfig.hessian_damp`` (0.3);
  * "+ two-sided feedback" (``--steps-two-sided``): also
    ``compress(row_hessians=fisher_row_hessians)``,
    feedback across the rows of each row chunk (linear layers).
NNCodec 2.1.3 (size = its whole bitstream): dependent quantization with ``opt_qp`` (its best
setting on MiniLM, bench_rd.py) at qp -41/-40, and plain DQ at qp -38. Prints a markdown table and
the ratios at the budget.
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
import bench_scales  # noqa: E402
import nnpress  # noqa: E402
import peers  # noqa: E402
from nnpress import tune  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--calibration", choices=("even", "extended"), default="even")
    ap.add_argument("--extra", type=int, default=None, help="with extended: only the first N extra sentences")
    ap.add_argument("--steps-plain", default="0.07,0.08,0.085", help="relative steps without feedback")
    ap.add_argument("--steps-feedback", default="0.085,0.09,0.095,0.1", help="relative steps with feedback")
    ap.add_argument("--steps-two-sided", default="", help="relative steps with feedback inside and across rows")
    ap.add_argument("--draws", type=int, default=16, help="draws per batch of fisher_hessians")
    ap.add_argument("--damp", type=float, default=0.3, help="hessian_damp")
    ap.add_argument("--no-peers", action="store_true", help="skip NNCodec")
    ap.add_argument("--seed", type=int, default=0, help="seed of the Fisher and K-FAC draws")
    args = ap.parse_args()
    import torch

    import minilm

    torch.set_num_threads(os.cpu_count() or 1)
    if not args.no_peers:
        peers.import_nncodec()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; load {os.getloadavg()}; nnpress "
        f"{nnpress.__version__}; torch {torch.__version__}; calibration {args.calibration}\n"
    )
    extra = list(minilm.CALIBRATION_EXTRA)[: args.extra] if args.calibration == "extended" else []
    cal = minilm.SENTENCES[::2] + extra
    setup = bench_rd.minilm_setup(calibration=cal, seed=args.seed)
    w = setup["weights"]
    t0 = time.perf_counter()
    hess = nnpress.fisher_hessians(
        setup["fisher_model"], setup["batches"], mode="sampled", output="gaussian", draws=args.draws, seed=args.seed
    )
    hess = {k[2:]: v.numpy() for k, v in hess.items() if k[2:] in w}  # strip "m."
    log(
        f"fisher_hessians on {len(cal)} sentences ({args.draws} draws): "
        f"{time.perf_counter() - t0:.1f}s, {len(hess)} blocks"
    )
    t0 = time.perf_counter()
    rows = nnpress.fisher_row_hessians(
        setup["fisher_model"], setup["batches"], mode="sampled", output="gaussian", draws=args.draws, seed=args.seed
    )
    rows = {k[2:]: v.numpy() for k, v in rows.items() if k[2:] in w}
    log(f"fisher_row_hessians: {time.perf_counter() - t0:.1f}s, {len(rows)} blocks")
    sens, imp_raw = tune.sensitivities_from_fisher(setup["fisher"])
    imp_raw = {k: v for k, v in imp_raw.items() if k in w and w[k].ndim >= 2}
    imp = tune.smooth_importance(imp_raw)
    scales = tune.channel_scales_from_importance(imp_raw, strength=0.3)
    g = tune.default_step(w, rel=1.0)
    runs = [
        ("nnpress, no feedback", [float(x) for x in args.steps_plain.split(",") if x], None, None),
        ("nnpress + error feedback", [float(x) for x in args.steps_feedback.split(",") if x], hess, None),
        ("nnpress + two-sided feedback", [float(x) for x in args.steps_two_sided.split(",") if x], hess, rows),
    ]
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, rels, h, rh in runs:
            if not rels:
                continue
            curves[label] = []
            for r in rels:
                p = bench_scales.nnpress_file_point(
                    setup,
                    g * r,
                    sens,
                    imp,
                    scales,
                    args.threads,
                    tmp,
                    hessians=h,
                    hessian_damp=args.damp,
                    row_hessians=rh,
                )
                log(
                    f"  {label}: rel step {r}: {p['bits_per_param']:.4f} b/p mean cos {p['metric']:.5f} "
                    f"(min {p['min']:.4f}; {p['compress_s']:.0f}s)"
                )
                curves[label].append(p)
    peer_points = {}
    if not args.no_peers:
        for label, qps, kw in (
            ("NNCodec DQ opt_qp", (-41, -40), {"use_dq": True, "opt_qp": True}),
            ("NNCodec DQ", (-38,), {"use_dq": True}),
        ):
            peer_points[label] = []
            for qp in qps:
                p = bench_rd.nncodec_point(setup, qp, **kw)
                log(f"  {label} qp {qp}: {p['bits_per_param']:.4f} b/p mean cos {p['metric']:.5f}")
                peer_points[label].append(p)
    curves.update(peer_points)
    print(f"calibration: {len(cal)} sentences\n")
    bench_scales.report(setup, curves, peer="NNCodec DQ opt_qp")


if __name__ == "__main__":
    main()
