"""all-MiniLM-L6-v2 compressed coarsely enough that Linear rows hold <= 16 distinct levels: how many of
its 37 Linear layers the table-lookup format ("lut", nnpress/kernels/lut.h) can hold, and the whole
forward pass through ``nnpress.nn.convert`` with and without it, next to torch fp32, one thread.

    python bench/python/bench_lut_model.py --rel-steps 1,1.5,2 [--method nearest] [--limit 40] [--rounds 3]

- For each ``rel_step``: ``nnpress.compress(model, path, CodecConfig(plan=...))`` with a plan entry
  ``TensorPlan(rel_step=..., method=--method)`` for each of the 37 Linear weights (step = rel_step x the
  weight's spread, no size factor) and the defaults for every other tensor (embeddings, norms, biases:
  a coarse step on the 30522 x 384 word embeddings alone would ruin the model); eligible = the Linear
  weights whose every row holds <= 16 distinct reconstruction indices (``nn_levels.max_row_values``
  of the stored levels); fidelity of the file = embedding cosine of the decompressed float model
  against torch fp32 (mean, min over the sentences).
- Engines, built on a model whose parameters are on the meta device (no float32 copy of converted
  weights): "nnpress lut" = ``convert(model, nnp=path, batch=T, act_digits=None)`` (every exact format
  timed per layer, lut among them where eligible), "nnpress no lut" = the same with
  ``candidates=("dense", "levels", "cser", "codebook")``; and torch fp32 (the uncompressed model).
  T = the median token count. act_digits=None: no format rounds activations, so the comparison is
  about the weight formats.
- Sentences: bench/data/minilm_test_sentences.txt (the first ``--limit``), each alone (batch 1). Each
  round runs every engine on every sentence, interleaved; latency = median over sentences and rounds of
  the calling thread's CPU time (``time.thread_time``); Linear time = the summed CPU time of the Linear
  layers per forward (hooks, separate interleaved passes).
- Fidelity per engine: cosine against torch fp32 and against the decompressed float model (the
  converted kernels' own error).
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rel-steps", default="1,1.5,2")
    ap.add_argument("--method", default="nearest", help="quantizer of the Linear weights")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--md")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import minilm
    import nnpress
    from bench_infer_minilm import Wrapped, build_nnpress, cosines, linear_timer, pooled, sentences
    from nnpress.nn_levels import LevelLinear, held_nbytes, level_tensor, levels_plan, max_row_values

    model, tok = minilm.load_minilm()
    sents = sentences()[: args.limit]
    encs = [tok([s], return_tensors="pt") for s in sents]
    batch = int(statistics.median(int(e["input_ids"].shape[1]) for e in encs))
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]

    def embed(run) -> np.ndarray:
        return np.concatenate([pooled(run(e), e["attention_mask"].numpy()) for e in encs])

    ref = embed(Wrapped(model))
    load0 = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    lines = [
        f"commit {commit.stdout.strip()}, {platform.processor() or platform.machine()}, one thread, "
        f"{len(sents)} sentences (median {batch} tokens), {args.rounds} rounds, thread CPU time, Linear weights "
        f"quantized with {args.method}; "
        f"load {load0[0]:.1f}",
        "",
        "| rel_step | lut-eligible Linear | file cosine (mean / min) | engine | Linear formats | held MiB "
        "| forward ms (median) | Linear ms (median) | × torch fp32 | cosine vs fp32 (mean / min) "
        "| vs decompressed (min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    tmp = tempfile.TemporaryDirectory(prefix="bench_lut_model_")
    for rs in (float(s) for s in args.rel_steps.split(",")):
        path = os.path.join(tmp.name, f"minilm_{rs}.nnp")
        plan = {n + ".weight": nnpress.TensorPlan(rel_step=rs, method=args.method) for n in linears}
        nnpress.compress(model, path, nnpress.CodecConfig(plan=plan))
        f = nnpress.NnpFile(path)
        most = {n: max_row_values(level_tensor(f, n + ".weight").u) for n in linears}
        eligible = sum(v <= 16 for v in most.values())
        dec = copy.deepcopy(model)
        dec.load_state_dict(
            {k: torch.from_numpy(v) for k, v in nnpress.decompress(path, as_numpy=True).items()}, strict=False
        )
        emb_dec = embed(Wrapped(dec))
        file_cos = cosines(ref, emb_dec)
        print(f"rel_step {rs}: {eligible}/{len(linears)} Linear eligible; file cosine {file_cos}", flush=True)
        print("  most values per row:", sorted(most.values())[:5], "...", sorted(most.values())[-3:], flush=True)
        with_lut, _ = build_nnpress(path, "auto", batch, None)
        no_lut, _ = build_nnpress(path, "auto", batch, None, ["dense", "levels", "cser", "codebook"])
        engines = {"torch fp32": Wrapped(model), "nnpress lut": Wrapped(with_lut), "nnpress no lut": Wrapped(no_lut)}
        emb = {name: embed(run) for name, run in engines.items()}
        cpu = {name: [] for name in engines}
        for _ in range(args.rounds):
            for e in encs:
                for name, run in engines.items():
                    c = time.thread_time()
                    run(e)
                    cpu[name].append(time.thread_time() - c)
        timers, handles = {}, []
        for name, m in (("torch fp32", model), ("nnpress lut", with_lut), ("nnpress no lut", no_lut)):
            acc, h, _ = linear_timer(m, (LevelLinear, torch.nn.Linear))
            timers[name], handles = acc, handles + h
        lin = {name: [] for name in timers}
        for _ in range(args.rounds):
            for e in encs:
                for name, acc in timers.items():
                    acc[0] = 0.0
                    engines[name](e)
                    lin[name].append(acc[0])
        for h in handles:
            h.remove()
        t_ref = statistics.median(cpu["torch fp32"])
        for name in engines:
            conv = {"torch fp32": None, "nnpress lut": with_lut, "nnpress no lut": no_lut}[name]
            formats = (
                "fp32"
                if conv is None
                else ", ".join(
                    f"{k} {v}"
                    for k, v in collections.Counter(
                        p["format"] for p in levels_plan(conv) if p["kind"] == "linear"
                    ).most_common()
                )
            )
            nbytes = held_nbytes(model if conv is None else conv)  # parameters, buffers, converted layers
            c_ref = cosines(ref, emb[name])
            c_dec = cosines(emb_dec, emb[name])
            t = statistics.median(cpu[name])
            lines.append(
                f"| {rs} | {eligible}/{len(linears)} | {file_cos[0]:.4f} / {file_cos[1]:.4f} | {name} | {formats} "
                f"| {nbytes / 2**20:.1f} | {1e3 * t:.2f} | {1e3 * statistics.median(lin[name]):.2f} | {t_ref / t:.2f} "
                f"| {c_ref[0]:.4f} / {c_ref[1]:.4f} | {c_dec[1]:.6f} |"
            )
        print("\n".join(lines[-3:]), flush=True)
    lines.append("")
    lines.append(f"load at the end {os.getloadavg()[0]:.1f}")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.md:
        Path(args.md).write_text(md)


if __name__ == "__main__":
    main()
