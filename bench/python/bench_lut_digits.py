"""The digits MLP (64 -> 256 -> 128 -> 10) and CNN with their Linear weights quantized coarsely enough
that rows hold <= 16 distinct levels: accuracy, lut-eligible layers and the forward pass through
``nnpress.nn.convert`` with and without the "lut" format, next to torch fp32, one thread.

    python bench/python/bench_lut_digits.py [--rel-steps 0.5,1,1.5] [--batch 1] [--rounds 5]

- Models: ``nnpress.demo_models.train_digits_model(kind, seed=0)``; accuracy on the held-out test split
  (450 images, nothing tuned on it).
- ``.nnp``: ``CodecConfig(plan=...)`` with ``TensorPlan(rel_step=..., method="nearest")`` for every Linear
  weight, the defaults for the rest (convolutions stay torch's in nn.convert).
- Engines: torch fp32; "nnpress lut" = ``convert(model, nnp=path, batch=B, act_digits=None)``;
  "nnpress no lut" = the same with ``candidates=("dense", "levels", "cser", "codebook")``.
- Time: the test images in batches of B, every engine on every batch interleaved, ``--rounds`` rounds;
  median thread CPU µs per batch.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rel-steps", default="0.5,1,1.5")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import nnpress
    import nnpress.nn as nnn
    from nnpress.demo_models import load_digits_data, train_digits_model
    from nnpress.nn_levels import level_tensor, levels_plan, max_row_values

    data = load_digits_data()
    x = torch.from_numpy(data.x_test)
    y = torch.from_numpy(data.y_test)
    batches = [x[i : i + args.batch] for i in range(0, len(x), args.batch)]
    print(f"load {os.getloadavg()[0]:.1f}; {len(x)} test images, batch {args.batch}, {args.rounds} rounds")
    print(
        "| model | rel_step | lut-eligible Linear | engine | Linear formats | accuracy | µs per batch (median) "
        "| × torch fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    tmp = tempfile.TemporaryDirectory(prefix="bench_lut_digits_")
    for kind in ("mlp", "cnn"):
        model = train_digits_model(kind, seed=0)
        linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        for rs in (float(s) for s in args.rel_steps.split(",")):
            path = os.path.join(tmp.name, f"{kind}_{rs}.nnp")
            plan = {n + ".weight": nnpress.TensorPlan(rel_step=rs, method="nearest") for n in linears}
            nnpress.compress(model, path, nnpress.CodecConfig(plan=plan))
            f = nnpress.NnpFile(path)
            eligible = sum(max_row_values(level_tensor(f, n + ".weight").u) <= 16 for n in linears)
            engines = {
                "torch fp32": model,
                "nnpress lut": nnn.convert(model, nnp=path, batch=args.batch, act_digits=None),
                "nnpress no lut": nnn.convert(
                    model,
                    nnp=path,
                    batch=args.batch,
                    act_digits=None,
                    candidates=("dense", "levels", "cser", "codebook"),
                ),
            }
            cpu = {k: [] for k in engines}
            with torch.inference_mode():
                acc = {k: float((m(x).argmax(1) == y).float().mean()) for k, m in engines.items()}
                for _ in range(args.rounds):
                    for xb in batches:
                        for k, m in engines.items():
                            t = time.thread_time()
                            m(xb)
                            cpu[k].append(time.thread_time() - t)
            t_ref = statistics.median(cpu["torch fp32"])
            for k, m in engines.items():
                fm = "fp32"
                if k != "torch fp32":
                    c = collections.Counter(p["format"] for p in levels_plan(m) if p["kind"] == "linear")
                    fm = ", ".join(f"{a} {b}" for a, b in c.most_common())
                t = statistics.median(cpu[k])
                print(
                    f"| {kind} | {rs} | {eligible}/{len(linears)} | {k} | {fm} | {acc[k]:.4f} | {t * 1e6:.1f} "
                    f"| {t_ref / t:.2f} |",
                    flush=True,
                )
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
