"""all-MiniLM-L6-v2 inference on the levels of its default ``.nnp``: torch fp32, nnpress-converted,
ONNX Runtime fp32 and ONNX Runtime dynamic int8, side by side in one run, one thread.

    python bench/python/bench_infer_minilm.py [--nnp minilm.nnp] [--rounds 3] [--format auto]
        [--act-digits 3] [--json out.json] [--rss]

- The ``.nnp`` is the data-free default (``nnpress.compress(model, path)``), written to a temporary
  folder unless ``--nnp`` names an existing one.
- nnpress: the model is built from its config with its parameters on the meta device
  (``nnpress.nn.params_on_meta``) and converted with ``nnpress.nn.convert(model, format, nnp=path,
  batch=T)``, T = the median token count of the test sentences, so no float32 copy of the weights
  exists in the process; the per-layer choice is printed (``levels_plan``). ``--act-digits``
  (default 2) lets the choice include the formats that round activations (levels16, int8); a second
  engine, "nnpress exact", is converted with exact formats only (``act_digits=None``).
- ONNX Runtime: the fp32 model exported with ``torch.onnx.export`` (TorchScript exporter, opset 17,
  dynamic batch and sequence axes); int8 = ``onnxruntime.quantization.quantize_dynamic`` with its
  defaults. Sessions with intra_op_num_threads = inter_op_num_threads = 1, sequential execution.
- Sentences: bench/data/minilm_test_sentences.txt (110 sentences nothing was tuned on), each run
  alone (batch 1, no padding). Each round times every engine on every sentence, interleaved
  (sentence by sentence: torch, nnpress, ORT fp32, ORT int8), so load bursts hit all alike.
  Latency = the model's forward (tokenisation and pooling excluded), median per sentence, as wall
  time and as the calling thread's CPU time (one thread everywhere, so the CPU time is the work
  done, without the time other processes on a shared machine hold the core).
- Linear time: the summed CPU time (``time.thread_time``) of the 37 Linear layers (6 x Q, K, V, attention output,
  intermediate, output + the pooler) in one forward, measured with forward pre-/post-hooks in
  separate interleaved passes (hooks add their own cost, so these passes are not the latency ones).
- Fidelity: per sentence, cosine between the mean-pooled, L2-normalised embedding and torch fp32's;
  mean and min over the sentences, next to every row. Also nnpress against the decompressed float
  model (torch running ``nnpress.decompress``'s weights): the converted kernels' own error.
- Weight bytes: ``nnpress.nn_levels.held_nbytes`` (parameters, buffers and the converted layers'
  arrays); the ONNX files' sizes for ORT. ``--rss`` adds the peak RSS of separate processes (one per
  engine, /usr/bin/time -v) that load only that engine and embed the sentences once, and their RSS
  at the end ("baseline": the same imports and tokenizer and the model built on the meta device, i.e.
  transformers' and torch's code without any weight). ``--rss-only`` measures that alone.
"""

from __future__ import annotations

import argparse
import copy
import json
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
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
SENTENCES_FILE = REPO / "bench" / "data" / "minilm_test_sentences.txt"


def sentences() -> list[str]:
    return [s for s in SENTENCES_FILE.read_text(encoding="utf-8").splitlines() if s.strip()]


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    v = (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def cosines(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    c = (ref * test).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(test, axis=1))
    return float(c.mean()), float(c.min())


class Wrapped:
    """A torch MiniLM as (input_ids, attention_mask, token_type_ids) -> last_hidden_state."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, enc) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(**enc).last_hidden_state.numpy()


class Ort:
    def __init__(self, path: str) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def __call__(self, enc) -> np.ndarray:
        feeds = {k: enc[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
        return self.sess.run(None, feeds)[0]


def export_onnx(model, enc, folder: str) -> tuple[str, str]:
    import torch
    from onnxruntime.quantization import quantize_dynamic

    class W(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, a, b, c):
            return self.m(input_ids=a, attention_mask=b, token_type_ids=c).last_hidden_state

    fp32 = os.path.join(folder, "minilm.onnx")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {k: {0: "batch", 1: "seq"} for k in [*names, "last_hidden_state"]}
    torch.onnx.export(
        W(copy.deepcopy(model)),  # the TorchScript exporter leaves the model it traces altered
        tuple(enc[k] for k in names),
        fp32,
        input_names=names,
        output_names=["last_hidden_state"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    int8 = os.path.join(folder, "minilm_int8.onnx")
    quantize_dynamic(fp32, int8)
    return fp32, int8


def build_nnpress(nnp: str, fmt, batch: int, act_digits, candidates=None, max_bytes_ratio=None):
    import torch  # noqa: F401
    from transformers import AutoConfig, AutoModel

    import minilm
    import nnpress.nn as nnn

    config = AutoConfig.from_pretrained(minilm.model_path())
    with nnn.params_on_meta():
        model = AutoModel.from_config(config)
    t = time.perf_counter()
    conv = nnn.convert(
        model,
        fmt,
        nnp=nnp,
        batch=batch,
        act_digits=act_digits,
        candidates=candidates,
        max_bytes_ratio=max_bytes_ratio,
        inplace=True,
    )
    return conv, time.perf_counter() - t


def linear_timer(model, kinds):
    """Forward hooks summing the wall time of the modules of types ``kinds``; returns (total list, handles)."""
    acc = [0.0]
    start = {}

    def pre(mod, args):
        start[id(mod)] = time.thread_time()

    def post(mod, args, out):
        acc[0] += time.thread_time() - start[id(mod)]

    handles, n = [], 0
    for m in model.modules():
        if isinstance(m, kinds):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
            n += 1
    return acc, handles, n


def rss_child(engine: str, nnp: str, fmt, batch: int, act_digits, candidates, onnx_dir: str, cap=None) -> None:
    """Load one engine and embed every test sentence once (peak RSS measured by the parent)."""
    import torch

    torch.set_num_threads(1)
    import minilm

    minilm._prepare_import()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm.model_path())
    if engine == "baseline":  # the model's code loaded and a model built without weights
        from transformers import AutoConfig, AutoModel

        with torch.device("meta"):
            AutoModel.from_config(AutoConfig.from_pretrained(minilm.model_path()))
        run = None
    elif engine == "torch":
        run = Wrapped(minilm.load_minilm()[0])
    elif engine == "nnpress":
        run = Wrapped(build_nnpress(nnp, fmt, batch, act_digits, candidates, cap)[0])
    else:
        run = Ort(os.path.join(onnx_dir, "minilm.onnx" if engine == "ort_fp32" else "minilm_int8.onnx"))
    if run is not None:
        for s in sentences():
            run(tok([s], return_tensors="pt"))
    with open("/proc/self/status", encoding="ascii") as f:
        rss_now = [line.split()[1] for line in f if line.startswith("VmRSS:")]
    print("rss_after_kib", rss_now[0] if rss_now else "0")


def peak_rss_mib(args, engine: str, nnp: str, onnx_dir: str) -> tuple[float, float] | None:
    """(peak RSS, RSS after the run) in MiB of a child process running only ``engine``."""
    if not os.path.exists("/usr/bin/time"):
        return None
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--rss-child", engine, "--nnp", nnp, "--onnx-dir", onnx_dir]
    cmd += ["--format", args.format, "--batch", str(args.batch_hint), "--act-digits", str(args.act_digits)]
    if args.candidates:
        cmd += ["--candidates", ",".join(args.candidates)]
    if args.max_bytes_ratio is not None:
        cmd += ["--max-bytes-ratio", str(args.max_bytes_ratio)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    after = [int(line.split()[1]) / 1024 for line in p.stdout.splitlines() if line.startswith("rss_after_kib")]
    for line in p.stderr.splitlines():
        if "Maximum resident set size" in line and after:
            return int(line.split(":")[1]) / 1024, after[0]
    raise RuntimeError(f"rss child {engine} failed: {p.stderr[-800:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnp", help="the default .nnp of MiniLM (written to a temporary folder if absent)")
    ap.add_argument("--format", default="auto", help="nnpress.nn.convert format for the Linear layers")
    ap.add_argument("--act-digits", default="2", help="int8 formats' activation digits (1-3, or 'none')")
    ap.add_argument("--candidates", help="comma-separated formats the auto choice may pick (default: all)")
    ap.add_argument("--max-bytes-ratio", type=float, help="cap of each auto layer's bytes vs float32 (default: none)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="use the first N sentences only (0 = all)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--rss", action="store_true", help="also measure peak RSS per engine (child processes)")
    ap.add_argument("--rss-only", action="store_true", help="only the RSS measurement (needs --nnp)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--onnx-dir", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help="rows the format choice is timed at (0: median tokens)")
    args = ap.parse_args()
    act_digits = None if args.act_digits == "none" else int(args.act_digits)
    args.candidates = args.candidates.split(",") if args.candidates else None
    args.batch_hint = args.batch

    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    if args.rss_child:
        rss_child(
            args.rss_child,
            args.nnp,
            args.format,
            args.batch,
            act_digits,
            args.candidates,
            args.onnx_dir,
            args.max_bytes_ratio,
        )
        return

    import minilm
    import nnpress
    from nnpress.nn_levels import LevelLinear, held_nbytes, levels_plan

    if args.rss_only:  # needs an existing --nnp; the ONNX files are made here
        model, tok = minilm.load_minilm()
        tmp = tempfile.TemporaryDirectory(prefix="bench_infer_minilm_")
        export_onnx(model, tok(["one sentence"], return_tensors="pt"), tmp.name)
        args.batch_hint = args.batch or 14
        for eng in ("baseline", "torch", "nnpress", "ort_fp32", "ort_int8"):
            peak, after = peak_rss_mib(args, eng, args.nnp, tmp.name)
            print(f"RSS {eng}: peak {peak:.0f} MiB, after the run {after:.0f} MiB")
        return

    model, tok = minilm.load_minilm()
    sents = sentences()
    if args.limit:
        sents = sents[: args.limit]
    encs = [tok([s], return_tensors="pt") for s in sents]
    ntok = [int(e["input_ids"].shape[1]) for e in encs]
    batch = args.batch or int(statistics.median(ntok))
    args.batch_hint = batch
    tmp = tempfile.TemporaryDirectory(prefix="bench_infer_minilm_")
    nnp = args.nnp
    if not nnp or not os.path.exists(nnp):
        nnp = nnp or os.path.join(tmp.name, "minilm.nnp")
        t = time.perf_counter()
        nnpress.compress(model, nnp)
        print(f"wrote the default .nnp {nnp} in {time.perf_counter() - t:.1f} s")
    conv, build_s = build_nnpress(nnp, args.format, batch, act_digits, args.candidates, args.max_bytes_ratio)
    # the same with exact formats only (no rounded activations), when the first may round
    exact = (
        None
        if act_digits is None
        else build_nnpress(nnp, args.format, batch, None, args.candidates, args.max_bytes_ratio)[0]
    )
    dec = copy.deepcopy(model)
    dec.load_state_dict(
        {k: torch.from_numpy(v) for k, v in nnpress.decompress(nnp, as_numpy=True).items()}, strict=False
    )
    fp32_onnx, int8_onnx = export_onnx(model, encs[0], tmp.name)

    engines = {
        "torch fp32": Wrapped(model),
        "nnpress": Wrapped(conv),
        **({"nnpress exact": Wrapped(exact)} if exact is not None else {}),
        "ORT fp32": Ort(fp32_onnx),
        "ORT int8 (dynamic)": Ort(int8_onnx),
    }
    plan = levels_plan(conv)

    # fidelity (one pass each) and the decompressed float model's, for the kernels' own error
    emb = {
        name: np.concatenate([pooled(run(e), e["attention_mask"].numpy()) for e in encs])
        for name, run in engines.items()
    }
    emb_dec = np.concatenate([pooled(Wrapped(dec)(e), e["attention_mask"].numpy()) for e in encs])

    # latency: interleaved per sentence, every round
    lat = {name: [] for name in engines}
    cpu = {name: [] for name in engines}
    for _ in range(args.rounds):
        for e in encs:
            for name, run in engines.items():
                t, c = time.perf_counter(), time.thread_time()
                run(e)
                cpu[name].append(time.thread_time() - c)
                lat[name].append(time.perf_counter() - t)

    # Linear time: hooks in separate passes, interleaved
    acc_t, h_t, n_t = linear_timer(model, (torch.nn.Linear,))
    timers = {"torch fp32": acc_t}
    acc_n, h_n, n_n = linear_timer(conv, (LevelLinear, torch.nn.Linear))
    timers["nnpress"] = acc_n
    if exact is not None:
        acc_x, h_x, _ = linear_timer(exact, (LevelLinear, torch.nn.Linear))
        timers["nnpress exact"] = acc_x
        h_n = h_n + h_x
    lin = {name: [] for name in timers}
    for _ in range(args.rounds):
        for e in encs:
            for name, acc in timers.items():
                acc[0] = 0.0
                engines[name](e)
                lin[name].append(acc[0])
    for h in h_t + h_n:
        h.remove()

    sizes = {
        "torch fp32": held_nbytes(model),
        "nnpress": held_nbytes(conv),
        "nnpress exact": held_nbytes(exact) if exact is not None else 0,
        "ORT fp32": os.path.getsize(fp32_onnx),
        "ORT int8 (dynamic)": os.path.getsize(int8_onnx),
    }
    rss = {}
    if args.rss:
        for eng in ("baseline", "torch", "nnpress", "ort_fp32", "ort_int8"):
            rss[eng] = peak_rss_mib(args, eng, nnp, tmp.name)

    ref = emb["torch fp32"]
    rows = []
    for name in engines:
        ms = np.array(lat[name]) * 1e3
        mean_c, min_c = cosines(ref, emb[name])
        rows.append(
            {
                "engine": name,
                "median_ms": float(np.median(ms)),
                "mean_ms": float(ms.mean()),
                "median_cpu_ms": float(np.median(cpu[name]) * 1e3),
                "cos_mean": mean_c,
                "cos_min": min_c,
                "weight_bytes": sizes[name],
            }
        )
    t_med, c_med = rows[0]["median_ms"], rows[0]["median_cpu_ms"]
    load = os.getloadavg()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    lin_t, lin_n = np.array(lin["torch fp32"]) * 1e3, np.array(lin["nnpress"]) * 1e3
    lin_x = np.array(lin.get("nnpress exact", [np.nan])) * 1e3
    dec_c = cosines(emb_dec, emb["nnpress"])
    print(
        f"\ncommit {commit.stdout.strip()}, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )
    print(
        f"{len(sents)} sentences ({min(ntok)}-{max(ntok)} tokens, median {int(statistics.median(ntok))}), "
        f"{args.rounds} rounds, one thread; format choice timed at {batch} rows; conversion {build_s:.1f} s"
    )
    print(
        "\n| engine | median wall ms/sentence | vs torch | median CPU ms | vs torch | "
        "cosine mean / min vs torch fp32 | weight bytes |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['median_ms']:.2f} | {t_med / r['median_ms']:.2f}x | {r['median_cpu_ms']:.2f} | "
            f"{c_med / r['median_cpu_ms']:.2f}x | "
            f"{r['cos_mean']:.6f} / {r['cos_min']:.6f} | {r['weight_bytes'] / 1e6:.2f} MB "
            f"({r['weight_bytes'] / sizes['torch fp32']:.3f}x) |"
        )
    print(
        f"\nLinear layers ({n_t} torch, {n_n} converted), summed per sentence: torch fp32 median "
        f"{np.median(lin_t):.3f} ms, nnpress {np.median(lin_n):.3f} ms: {np.median(lin_t) / np.median(lin_n):.2f}x "
        f"(per-sentence ratio median {np.median(lin_t / lin_n):.2f}x)"
    )
    if exact is not None:
        print(
            f"nnpress exact: Linear median {np.median(lin_x):.3f} ms: {np.median(lin_t) / np.median(lin_x):.2f}x "
            f"(per-sentence ratio median {np.median(lin_t / lin_x):.2f}x); vs the decompressed float model "
            "cosine mean {:.12f} / min {:.12f}".format(*cosines(emb_dec, emb["nnpress exact"]))
        )
    print(f"nnpress vs the decompressed float model: cosine mean {dec_c[0]:.12f} / min {dec_c[1]:.12f}")
    if rss:
        print(
            "RSS (MiB, separate processes, peak / after embedding every sentence): "
            + ", ".join(f"{k} {v[0]:.0f} / {v[1]:.0f}" for k, v in rss.items() if v)
        )
    counts: dict = {}
    for p in plan:
        counts[p["format"]] = counts.get(p["format"], 0) + 1
    print("formats: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if exact is not None:
        ex: dict = {}
        for p in levels_plan(exact):
            ex[p["format"]] = ex.get(p["format"], 0) + 1
        print("formats (exact): " + ", ".join(f"{k} {v}" for k, v in sorted(ex.items())))
    for p in plan:
        times = ", ".join(f"{k} {v:.0f}" for k, v in p.get("times_us", {}).items())
        print(f"  {p['name']:48s} {p['shape']!s:13s} {p['format']:8s} {p['bytes'] / 1e3:9.1f} kB  {times}")
    if args.json:
        out = {
            "commit": commit.stdout.strip(),
            "load": load,
            "rows": rows,
            "linear_ms": {k: (np.array(v) * 1e3).tolist() for k, v in lin.items()},
            "nnpress_vs_decompressed": dec_c,
            "plan": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()} for p in plan],
            "rss_mib": rss,
            "tokens": ntok,
            "batch": batch,
        }
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
