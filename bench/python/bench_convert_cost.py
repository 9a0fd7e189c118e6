"""What ``nnpress.nn.convert`` costs on all-MiniLM-L6-v2: conversion wall / CPU time, peak RSS, and the
forward time of the result, one thread.

    python bench/python/bench_convert_cost.py --nnp minilm.nnp [--batch 16] [--repeats 3] [--rss]

- The model is built from its config with its parameters on the meta device
  (``nnpress.nn.params_on_meta``) and converted with ``convert(model, nnp=path, batch=B)`` (format
  "auto", act_digits 2: the choice over every candidate); ``--repeats`` conversions in a row, each
  reported (wall time and the process's CPU time, one torch thread).
- Forward: every test sentence (bench/data/minilm_test_sentences.txt) once per round, the median
  thread CPU time per sentence over 3 rounds, for the last converted model.
- ``--rss``: a child process under ``/usr/bin/time -v`` that imports everything, builds the meta
  model, reports its RSS (baseline), converts once and exits: its peak RSS minus that baseline is
  what the conversion adds.
- Runs under any venv whose nnpress has ``nnpress.nn.convert`` (to compare branches: the same script,
  two interpreters).
- ``--reuse-check``: two conversions in this process, with ``reuse_timings`` True and False, their
  conversion times, and their forward times interleaved sentence by sentence (5 rounds, thread CPU
  time, median per sentence): whether reusing a timing chose worse formats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def build(nnp: str, batch: int):
    import torch

    torch.set_num_threads(1)
    import minilm

    minilm._prepare_import()
    from transformers import AutoConfig, AutoModel

    import nnpress.nn as nnn

    config = AutoConfig.from_pretrained(minilm.model_path())
    with nnn.params_on_meta():
        model = AutoModel.from_config(config)
    return model, nnn


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))


def child(nnp: str, batch: int) -> None:
    model, nnn = build(nnp, batch)
    print("baseline_kib", rss_kib(), flush=True)
    nnn.convert(model, nnp=nnp, batch=batch, inplace=True)
    print("after_kib", rss_kib(), flush=True)


def reuse_check(args) -> None:
    import torch
    from transformers import AutoTokenizer

    import minilm

    models, out = {}, {"load_before": os.getloadavg()}
    for reuse in (True, False):
        model, nnn = build(args.nnp, args.batch)
        c = time.process_time()
        models[reuse] = nnn.convert(model, nnp=args.nnp, batch=args.batch, inplace=True, reuse_timings=reuse)
        out[f"convert_cpu_s_reuse_{reuse}"] = time.process_time() - c
        plan = nnn.levels_plan(models[reuse])
        out[f"formats_reuse_{reuse}"] = {
            f: sum(1 for p in plan if p["format"] == f) for f in {p["format"] for p in plan}
        }
        out[f"timed_layers_reuse_{reuse}"] = sum(1 for p in plan if p["times_us"] and "timed_as" not in p)
    tok = AutoTokenizer.from_pretrained(minilm.model_path())
    sents = [
        s for s in (HERE.parents[1] / "bench/data/minilm_test_sentences.txt").read_text().splitlines() if s.strip()
    ]
    enc = [tok([s], return_tensors="pt") for s in sents]
    rounds = {True: [], False: []}
    with torch.inference_mode():
        for _ in range(5):
            ts = {True: [], False: []}
            for e in enc:
                for reuse, m in models.items():
                    t = time.thread_time()
                    m(**e)
                    ts[reuse].append(time.thread_time() - t)
            for reuse in ts:
                rounds[reuse].append(statistics.median(ts[reuse]) * 1e3)
    for reuse in rounds:
        out[f"forward_ms_reuse_{reuse}"] = statistics.median(rounds[reuse])
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnp", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json")
    ap.add_argument("--reuse-check", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args.nnp, args.batch)
        return
    if args.reuse_check:
        reuse_check(args)
        return
    out: dict = {"python": sys.executable, "load_before": os.getloadavg()}
    if args.rss:
        p = subprocess.run(
            ["/usr/bin/time", "-v", sys.executable, __file__, "--child", "--nnp", args.nnp, "--batch", str(args.batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        base = int(next(line.split()[1] for line in p.stdout.splitlines() if line.startswith("baseline_kib")))
        peak = int(next(line.split()[-1] for line in p.stderr.splitlines() if "Maximum resident" in line))
        out["rss_mib"] = {"baseline": base / 1024, "peak": peak / 1024, "added": (peak - base) / 1024}
        print(
            f"peak RSS {peak / 1024:.1f} MiB, before converting {base / 1024:.1f} MiB: +{(peak - base) / 1024:.1f} MiB"
        )
    import torch

    runs = []
    conv = None
    for _ in range(args.repeats):
        model, nnn = build(args.nnp, args.batch)
        w, c = time.perf_counter(), time.process_time()
        conv = nnn.convert(model, nnp=args.nnp, batch=args.batch, inplace=True)
        runs.append({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "load": os.getloadavg()[0]})
        print(f"convert: wall {runs[-1]['wall_s']:.2f} s, cpu {runs[-1]['cpu_s']:.2f} s, load {runs[-1]['load']:.1f}")
    out["convert"] = runs
    plan = nnn.levels_plan(conv)
    out["formats"] = {f: sum(1 for p in plan if p["format"] == f) for f in sorted({p["format"] for p in plan})}
    print("formats:", out["formats"])
    from transformers import AutoTokenizer

    import minilm

    tok = AutoTokenizer.from_pretrained(minilm.model_path())
    sents = [
        s for s in (HERE.parents[1] / "bench/data/minilm_test_sentences.txt").read_text().splitlines() if s.strip()
    ]
    enc = [tok([s], return_tensors="pt") for s in sents]
    per = []
    with torch.inference_mode():
        for _ in range(3):
            ts = []
            for e in enc:
                t = time.thread_time()
                conv(**e)
                ts.append(time.thread_time() - t)
            per.append(statistics.median(ts) * 1e3)
    out["forward_ms_median_cpu"] = min(per)
    out["load_after"] = os.getloadavg()
    print(f"forward: {min(per):.2f} ms per sentence (thread CPU, median, best of 3 rounds); load {out['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
