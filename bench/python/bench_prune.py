"""Pruning before coding: accuracy and size of the digits CNN/MLP at target sparsities, in one run.

    python bench/python/bench_prune.py [--models cnn,mlp] [--sparsities 0,0.3,0.5,0.7,0.8,0.9]

Models, data, Fisher and the top-1 metric as bench_rd.py (450 held-out digits; Fisher from 16
calibration batches). For each sparsity: magnitude pruning per tensor vs Fisher-saliency
(F * w^2) pruning and magnitude pruning with one global threshold (nnpress.prune), no fine-tuning. Each pruned model is
scored as floats and after nnpress.compress with the default configuration (a real .nnp file,
decoded by nnpress.decompress); size = the whole file, per parameter of the model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_rd  # noqa: E402
import nnpress  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--sparsities", default="0,0.3,0.5,0.7,0.8,0.9")
    args = ap.parse_args()
    sparsities = [float(s) for s in args.sparsities.split(",")]
    for kind in args.models.split(","):
        setup = bench_rd.digits_setup(kind)
        w, ev = setup["weights"], setup["evaluate"]
        fisher = {k: v.numpy() for k, v in setup["fisher"].items() if k in w and w[k].ndim >= 2}
        n_params = sum(v.size for v in w.values())
        print(f"### digits {kind}: {n_params:,} parameters, float top-1 {setup['base']:.4f}\n")
        print("| sparsity | pruning | top-1 (float) | top-1 (.nnp) | bits/param | achieved sparsity of levels |")
        print("|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for s in sparsities:
                for label, kw in (
                    ("magnitude, per tensor", {}),
                    ("magnitude, global", {"scope": "global"}),
                    ("Fisher F·w², global", {"importance": fisher, "scope": "global"}),
                ):
                    if s == 0 and kw:
                        continue
                    pw = nnpress.prune(w, s, **kw) if s > 0 else w
                    rep = nnpress.compress(pw, Path(tmp) / "m.nnp")
                    dec = nnpress.decompress(Path(tmp) / "m.nnp", as_numpy=True)
                    zeros = nnpress.sparsity_of(dec, list(fisher))
                    print(
                        f"| {s:.1f} | {label if s else 'none'} | {ev(pw):.4f} | {ev(dec):.4f} | "
                        f"{8 * rep.file_bytes / n_params:.3f} | {zeros:.3f} |",
                        flush=True,
                    )
        print()


if __name__ == "__main__":
    main()
