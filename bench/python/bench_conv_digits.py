"""The digits CNN (``nnpress demo``'s model) through ``nnpress.nn.convert`` against torch fp32, one thread.

    python bench/python/bench_conv_digits.py [--rounds 7] [--calls 200] [--json out.json]

- Model: ``train_digits_model("cnn", seed=0)`` (the demo's), compressed with ``nnpress.compress``
  defaults; torch fp32 runs the decompressed weights (``nnpress.decompress``), nnpress the model
  built on the meta device and converted with ``convert(model, nnp=path, example_inputs=x[:B])``
  at the batch B it is timed with (1 and 64), so its two conv layers and three Linear layers are
  each timed at their real input; once with the default act_digits (2: the rounding formats may be
  chosen) and once exact (act_digits=None).
- Timing: per batch size, ``--rounds`` rounds, each running every engine ``--calls`` times on the
  same test images, engines interleaved round by round; per engine the median over rounds of the
  mean thread CPU time per call (``time.thread_time``: one thread everywhere, so other processes on
  a shared machine do not count), and the load average next to it.
- Fidelity: argmax predictions on the whole test split (360 images) against the decompressed
  model's, and the largest logit difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import nnpress
    import nnpress.nn as nnn
    from nnpress.demo_models import build_digits_model, load_digits_data, train_digits_model

    data = load_digits_data()
    x_all = torch.as_tensor(np.asarray(data.x_test), dtype=torch.float32).reshape(-1, 1, 8, 8)
    model = train_digits_model("cnn", seed=0)
    tmp = tempfile.TemporaryDirectory()
    path = os.path.join(tmp.name, "digits_cnn.nnp")
    nnpress.compress(model, path)
    ref = build_digits_model("cnn").eval()
    ref.load_state_dict(nnpress.decompress(path))
    with torch.no_grad():
        ref_logits = ref(x_all)
    out: dict = {"load_start": os.getloadavg(), "torch": torch.__version__, "batches": {}}
    for batch in (1, 64):
        x = x_all[:batch].contiguous()
        engines = {"torch fp32": ref}
        for label, digits in (("nnpress", 2), ("nnpress exact", None)):
            with nnn.params_on_meta():
                light = build_digits_model("cnn")
            t = time.perf_counter()
            conv = nnn.convert(light, nnp=path, example_inputs=x, act_digits=digits, inplace=True)
            convert_s = time.perf_counter() - t
            with torch.no_grad():
                logits = conv(x_all)
            same = bool(torch.equal(logits.argmax(1), ref_logits.argmax(1)))
            diff = float((logits - ref_logits).abs().max())
            plan = {p["name"]: p["format"] for p in nnn.levels_plan(conv)}
            engines[label] = conv
            out["batches"].setdefault(batch, {})[label] = {
                "convert_s": convert_s,
                "predictions_equal": same,
                "max_logit_diff": diff,
                "plan": plan,
                "weight_bytes": nnpress.nn_levels.held_nbytes(conv),
            }
            print(
                f"batch {batch} {label}: convert {convert_s:.2f} s, predictions equal {same}, max |dlogit| {diff:.2e}"
            )
            print(f"  plan {plan}")
        times: dict[str, list[float]] = {k: [] for k in engines}
        with torch.inference_mode():
            for m in engines.values():
                m(x)
            for _ in range(args.rounds):
                for k, m in engines.items():
                    t = time.thread_time()
                    for _ in range(args.calls):
                        m(x)
                    times[k].append((time.thread_time() - t) / args.calls * 1e6)
        load = os.getloadavg()
        for k, v in times.items():
            med = statistics.median(v)
            entry = out["batches"][batch].setdefault(k, {})
            entry["us_per_call"] = med
            entry["vs_torch"] = statistics.median(times["torch fp32"]) / med
            print(
                f"batch {batch} {k}: {med:.1f} us per forward (thread CPU), {entry['vs_torch']:.2f}x torch; load {load}"
            )
        out["batches"][batch]["load"] = load
    out["torch_fp32_weight_bytes"] = sum(p.numel() * 4 for p in ref.parameters())
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
