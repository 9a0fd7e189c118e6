"""Quantizer benchmark: rate-distortion points and speed of nearest / rdoq / trellis, side by side.

Synthetic weights shaped like a real layer (default 4096 x 1024, sigma 0.02), Gaussian and
Laplacian. For each method a sweep over the step (and for rdoq/trellis over lam = c * step^2)
gives points (bits/weight from the real ``encode_levels`` stream size, MSE). From each method's
lower convex hull (achievable by splitting a tensor between two settings) the bits at the
distortion of plain rounding at a few steps are interpolated, so the table compares methods at
equal distortion. Speed: seconds per call (median of
3) at one operating point, and one RDOQ call on a 10-million-weight tensor.

Run from anywhere with nnpress installed:
    python bench/python/bench_quant.py            # ~5 minutes on 2 idle cores
    python bench/python/bench_quant.py --quick    # 1024 x 512, fewer points
    python bench/python/bench_quant.py --fisher   # digits CNN: nearest vs rdoq vs trellis, with and
                                                  # without Fisher importance (needs torch), ~1 min
    python bench/python/bench_quant.py --peers    # also NNCodec 2.1.3's quantizers + coder (URQ and
                                                  # dependent quantization, lambda_scale 0 and 1) on the
                                                  # same tensors (needs nncodec, see peers.py)
    python bench/python/bench_quant.py --minilm [--old-python P] [--nncodec-python P] [--rounds R]
        # trellis throughput on all-MiniLM-L6-v2's weight matrices (2-D tensors, 22.7 M weights):
        # this interpreter's nnpress, another interpreter's nnpress (--old-python, e.g. a venv with
        # the previous build) and NNCodec's dependent quantization (--nncodec-python, a venv with
        # nncodec 2.1.3), one thread and all threads, in alternating rounds (the machine may be
        # shared). Step 2^(-38/4) (NNCodec's qp -38; both reconstruct index * step), lam = 0.24
        # step^2, row blocks of about 2^18 weights as the encoder cuts them. Times only the
        # quantizer calls: one thread = the sum of the calls, one tensor after the other; all
        # threads = the wall time of all tensors quantized concurrently on every core (as
        # `compress` does), each also splitting its row blocks. Wall and CPU seconds (the calling
        # thread's for one thread, the process's for all). Checks that both nnpress builds
        # return identical levels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import nnpress

STEP_FACTORS = [2.0 ** (k / 4) for k in range(-10, 9)]  # x sigma: 0.18 .. 4, four per octave
C_VALUES = [0.05, 0.1, 0.2]  # lam = c * step^2
TARGET_FACTORS = [0.35, 0.75, 1.5, 3.0]  # nearest at these steps (x sigma) = target MSE


def make(dist, shape, sigma, seed=0):
    rng = np.random.default_rng(seed)
    if dist == "gaussian":
        return rng.normal(0.0, sigma, shape).astype(np.float32)
    return rng.laplace(0.0, sigma / np.sqrt(2.0), shape).astype(np.float32)  # std = sigma


def point(w, step, lam, method):
    t0 = time.perf_counter()
    q = nnpress.quantize(w, step, lam=lam, method=method)
    dt = time.perf_counter() - t0
    bits = len(nnpress.encode_levels(q)) * 8
    mse = float(np.mean((w.astype(np.float64) - nnpress.dequantize(q, step, method)) ** 2))
    return {"step": step, "lam": lam, "bpw": bits / w.size, "mse": mse, "sec": dt}


def pareto(points):
    """Lower convex hull of (MSE, bits/weight): every point on it is achievable by splitting a
    tensor between two settings, so comparing hulls is fair to every method alike."""
    pts = sorted(points, key=lambda p: (p["mse"], p["bpw"]))
    hull = []
    for p in pts:
        if hull and p["bpw"] >= hull[-1]["bpw"]:
            continue
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies on or above the segment a-p
            cross = (b["mse"] - a["mse"]) * (p["bpw"] - a["bpw"]) - (b["bpw"] - a["bpw"]) * (p["mse"] - a["mse"])
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def bits_at(front, mse):
    """Bits/weight of the hull at distortion mse (linear interpolation; NaN outside its range)."""
    ds = np.array([p["mse"] for p in front])
    bs = np.array([p["bpw"] for p in front])
    if mse < ds[0] or mse > ds[-1]:
        return float("nan")
    return float(np.interp(mse, ds, bs))


def nncodec_points(w, sigma):
    """NNCodec's own quantizer (quantLayer) + DeepCABAC coder on the same tensor, over qp."""
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peers

    out = {}
    # qp range covering steps ~0.25 sigma .. 4 sigma (step ~ 2^(qp/4))
    lo = int(np.floor(4 * np.log2(0.25 * sigma)))
    hi = int(np.ceil(4 * np.log2(4.0 * sigma)))
    for use_dq in (False, True):
        for lambda_scale in (0.0, 1.0):
            pts = []
            for qp in range(lo, hi + 1):
                t0 = time.perf_counter()
                q, step = peers.nncodec_quantize(w, qp, use_dq=use_dq, lambda_scale=lambda_scale)
                dt = time.perf_counter() - t0
                data = peers.nncodec_encode_levels(q, dq_flag=1 if use_dq else 0)
                mse = float(np.mean((w.astype(np.float64) - q.astype(np.float64) * step) ** 2))
                pts.append(
                    {
                        "step": step,
                        "lam": lambda_scale,
                        "bpw": len(data) * 8 / w.size,
                        "mse": mse,
                        "sec": dt,
                    }
                )
            out[f"NNCodec {'DQ' if use_dq else 'URQ'} ls={lambda_scale:g}"] = pts
    return out


def fisher_ablation():
    """Digits CNN (nnpress.demo_models): every weight tensor quantized with one relative step
    (step = s * std of the tensor), bits = real encode_levels sizes, fidelity = KL divergence of the
    test-set predictions from the float model's, and top-1 accuracy. Importance = the sampled
    Fisher diagonal (16 x 64 calibration examples), divided by its mean per tensor so that
    lam = c * step^2 keeps its meaning."""
    import torch

    from nnpress import demo_models as dm
    from nnpress.fisher import fisher_diagonal

    torch.set_num_threads(1)
    data = dm.load_digits_data()
    model = dm.train_digits_model("cnn", data=data)
    xt, yt = torch.as_tensor(data.x_test), torch.as_tensor(data.y_test)
    with torch.no_grad():
        ref = model(xt).log_softmax(1)
    base_acc = (ref.argmax(1) == yt).float().mean().item()
    fisher = fisher_diagonal(model, dm.calibration_batches(16, 64, data=data), mode="sampled")
    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if p.ndim >= 2]
    orig = {n: params[n].detach().clone() for n in names}
    count = sum(orig[n].numel() for n in names)

    def run(s_rel, c, method, use_fisher):
        bits = 0
        for n in names:
            w = orig[n].numpy()
            step = s_rel * float(w.std())
            imp = None
            if use_fisher:
                f = fisher[n].numpy().astype(np.float64)
                imp = f / max(float(f.mean()), 1e-30)
            q = nnpress.quantize(w, step, lam=c * step**2, importance=imp, method=method)
            bits += len(nnpress.encode_levels(q)) * 8
            with torch.no_grad():
                params[n].copy_(torch.as_tensor(nnpress.dequantize(q, step, method)))
        with torch.no_grad():
            out = model(xt).log_softmax(1)
            for n in names:
                params[n].copy_(orig[n])
        kl = torch.nn.functional.kl_div(out, ref, log_target=True, reduction="batchmean").item()
        return {"bpp": bits / count, "kl": kl, "acc": (out.argmax(1) == yt).float().mean().item()}

    configs = [
        ("nearest", "nearest", False, [0.0]),
        ("rdoq", "rdoq", False, [0.05, 0.1, 0.2]),
        ("rdoq + Fisher", "rdoq", True, [0.05, 0.1, 0.2]),
        ("trellis", "trellis", False, [0.1, 0.2, 0.4]),
        ("trellis + Fisher", "trellis", True, [0.1, 0.2, 0.4]),
    ]
    s_values = [2.0 ** (k / 4) for k in range(-14, 3)]
    results = {label: [run(s, c, m, fz) for s in s_values for c in cs] for label, m, fz, cs in configs}
    print(
        f"\n## digits CNN ({count} weights in {len(names)} tensors, float top-1 {base_acc:.4f}): "
        "fewest bits/weight in the sweep meeting each fidelity target"
    )
    targets = [
        ("KL <= 0.003", lambda r: r["kl"] <= 0.003),
        ("KL <= 0.01", lambda r: r["kl"] <= 0.01),
        ("KL <= 0.03", lambda r: r["kl"] <= 0.03),
        ("top-1 drop <= 0.2 pt", lambda r: r["acc"] >= base_acc - 0.002),
    ]
    print("| target | " + " | ".join(results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for name, ok in targets:
        cells = []
        for rs in results.values():
            feas = [r["bpp"] for r in rs if ok(r)]
            cells.append(f"{min(feas):.3f}" if feas else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


def median_time(fn, n=3):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


# --------------------------------------------------------------------------------------------------
# --minilm: trellis throughput on MiniLM's weight matrices, side by side with another build and NNCodec
# --------------------------------------------------------------------------------------------------

MINILM_QP = -38
MINILM_LAM_SCALE = 0.24
BLOCK_ELEMENTS = 1 << 18


def minilm_tensors(path):
    """Every 2-D float tensor of all-MiniLM-L6-v2 (name -> float32 array), saved to ``path`` (.npz)
    so worker interpreters need nothing but numpy."""
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import glob

    from safetensors.numpy import load_file

    import minilm

    files = glob.glob(os.path.join(minilm.model_path(), "*.safetensors"))
    d = load_file(files[0])
    mats = {
        k: np.ascontiguousarray(v, dtype=np.float32)
        for k, v in d.items()
        if v.ndim == 2 and v.dtype.kind == "f" and "position_ids" not in k
    }
    np.savez(path, **mats)
    return mats


def minilm_worker(kind, path, threads):
    """One timed run in this interpreter: prints one JSON line (seconds, weights, level hashes)."""
    import hashlib
    import inspect
    import json
    import os
    import sys

    mats = dict(np.load(path))
    step = 2.0 ** (MINILM_QP / 4.0)
    lam = MINILM_LAM_SCALE * step * step
    secs, cpu, count, hashes = 0.0, 0.0, 0, {}
    if kind == "nncodec":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import peers

        peers.import_nncodec()
        for w in mats.values():
            t0, c0 = time.perf_counter(), time.thread_time()
            _q, _ = peers.nncodec_quantize(w, MINILM_QP, use_dq=True)
            secs += time.perf_counter() - t0
            cpu += time.thread_time() - c0
            count += w.size
    else:
        blocks = (
            "rows_per_block" if "rows_per_block" in inspect.signature(nnpress.quantize).parameters else "chunk_rows"
        )

        def one(name):
            w = mats[name]
            rpb = max(1, min(w.shape[0], BLOCK_ELEMENTS // w.shape[1]))
            q = nnpress.quantize(w, step, lam=lam, method="trellis", threads=threads, **{blocks: rpb})
            return hashlib.sha1(np.ascontiguousarray(q, dtype=np.int32).tobytes()).hexdigest()

        count = sum(w.size for w in mats.values())
        if threads == 1:  # one tensor after the other, one thread each: the sum of the calls
            for name in mats:
                t0, c0 = time.perf_counter(), time.thread_time()
                hashes[name] = one(name)
                secs += time.perf_counter() - t0
                cpu += time.thread_time() - c0
        else:  # as compress does: tensors concurrently on all cores (wall time), row blocks too
            from concurrent.futures import ThreadPoolExecutor

            names = sorted(mats, key=lambda k: -mats[k].size)  # big ones first
            t0, c0 = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
                hashes = dict(zip(names, pool.map(one, names)))
            secs = time.perf_counter() - t0
            cpu = time.process_time() - c0
    print(json.dumps({"seconds": secs, "cpu_seconds": cpu, "weights": count, "hashes": hashes}))


def minilm_bench(old_python, nncodec_python, rounds, threads_all):
    import json
    import os
    import subprocess
    import sys
    import tempfile

    here = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "minilm.npz")
        mats = minilm_tensors(path)
        n = sum(v.size for v in mats.values())
        print(
            f"# all-MiniLM-L6-v2: {len(mats)} weight matrices, {n / 1e6:.1f} M weights; trellis at qp "
            f"{MINILM_QP} (step {2.0 ** (MINILM_QP / 4.0):.6g}), lam = {MINILM_LAM_SCALE} step^2"
        )
        print(
            f"# load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
            f"{os.cpu_count()} cores; {rounds} alternating rounds, median"
        )
        configs = [("nnpress (this build)", sys.executable, "nnpress", 1)]
        if old_python:
            configs.append(("nnpress (--old-python)", old_python, "nnpress", 1))
        if nncodec_python:
            configs.append(("NNCodec 2.1.3 DQ", nncodec_python, "nncodec", 1))
        configs.append(("nnpress (this build)", sys.executable, "nnpress", threads_all))
        if old_python:
            configs.append(("nnpress (--old-python)", old_python, "nnpress", threads_all))
        results = {i: [] for i in range(len(configs))}
        cpus = {i: [] for i in range(len(configs))}
        hashes = {}
        for _ in range(rounds):
            for i, (label, py, kind, threads) in enumerate(configs):
                out = subprocess.run(
                    [py, here, "--minilm-worker", kind, "--npz", path, "--threads", str(threads)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                results[i].append(r["seconds"])
                cpus[i].append(r.get("cpu_seconds", float("nan")))
                if r["hashes"]:
                    hashes.setdefault(py, r["hashes"])
                    if r["hashes"] != hashes[py]:
                        raise SystemExit(f"{label}: levels differ between runs with different thread counts")
        print(
            "\n| quantizer | threads | seconds wall (median) | M weights/s wall | CPU s (median) "
            "| M weights/CPU s | runs wall (s) |"
        )
        print("|---|---|---|---|---|---|---|")
        for i, (label, _, kind, threads) in enumerate(configs):
            sec = float(np.median(results[i]))
            cpu = float(np.median(cpus[i]))
            t = "1" if threads == 1 else f"all ({os.cpu_count()})"
            if kind == "nncodec":
                t = "1 (its own)"
            runs = ", ".join(f"{x:.2f}" for x in results[i])
            print(f"| {label} | {t} | {sec:.2f} | {n / sec / 1e6:.2f} | {cpu:.2f} | {n / cpu / 1e6:.2f} | {runs} |")
        if old_python and len(hashes) == 2:
            a, b = hashes.values()
            same = [k for k in a if a[k] == b.get(k)]
            print(f"\nlevels identical between the two nnpress builds on {len(same)} of {len(a)} tensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--peers", action="store_true", help="compare with NNCodec's quantizers and coder")
    ap.add_argument("--fisher", action="store_true", help="only the digits-CNN Fisher ablation")
    ap.add_argument("--minilm", action="store_true", help="only the trellis throughput on MiniLM's tensors")
    ap.add_argument("--old-python", help="--minilm: an interpreter whose nnpress is the build to compare with")
    ap.add_argument("--nncodec-python", help="--minilm: an interpreter with nncodec 2.1.3")
    ap.add_argument("--rounds", type=int, default=3, help="--minilm: alternating rounds")
    ap.add_argument("--minilm-worker", choices=["nnpress", "nncodec"], help=argparse.SUPPRESS)
    ap.add_argument("--npz", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.minilm_worker:
        minilm_worker(args.minilm_worker, args.npz, args.threads)
        return
    if args.minilm:
        minilm_bench(args.old_python, args.nncodec_python, args.rounds, 0)
        return
    if args.fisher:
        fisher_ablation()
        return
    shape = (1024, 512) if args.quick else (args.rows, args.cols)
    steps = STEP_FACTORS[::2] if args.quick else STEP_FACTORS
    cs = C_VALUES[::2] if args.quick else C_VALUES
    sigma = args.sigma
    print(f"# nnpress quantizers, weights {shape[0]}x{shape[1]}, sigma {sigma}")
    print(f"# load average at start: {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}")
    for dist in ["gaussian", "laplacian"]:
        w = make(dist, shape, sigma)
        runs = {"nearest": [point(w, f * sigma, 0.0, "nearest") for f in steps]}
        for m in ["rdoq", "trellis"]:
            runs[m] = [point(w, f * sigma, c * (f * sigma) ** 2, m) for f in steps for c in cs]
        fronts = {m: pareto(p) for m, p in runs.items()}
        print(f"\n## {dist}: bits/weight (real stream size) at equal MSE; ratio to nearest")
        print("| target (nearest step) | MSE | nearest | rdoq | trellis |")
        print("|---|---|---|---|---|")
        for f in TARGET_FACTORS:
            ref = point(w, f * sigma, 0.0, "nearest")
            row = [f"{f:g} sigma", f"{ref['mse']:.3g}", f"{ref['bpw']:.3f}"]
            for m in ["rdoq", "trellis"]:
                b = bits_at(fronts[m], ref["mse"])
                row.append(f"{b:.3f} ({b / ref['bpw']:.3f}x)")
            print("| " + " | ".join(row) + " |")
        if args.peers:
            nnc = nncodec_points(w, sigma)
            nnc_fronts = {k: pareto(v) for k, v in nnc.items()}
            best_nnc = pareto([p for v in nnc.values() for p in v])
            ours = pareto(runs["rdoq"] + runs["trellis"])
            print(f"\n## {dist}: against NNCodec 2.1.3 (its quantLayer + DeepCABAC, real stream sizes)")
            print(
                "| target MSE | " + " | ".join(nnc_fronts) + " | nnpress best (rdoq/trellis) | nnpress / best NNCodec |"
            )
            print("|---" * (len(nnc_fronts) + 3) + "|")
            for f in TARGET_FACTORS:
                mse = point(w, f * sigma, 0.0, "nearest")["mse"]
                cells = [f"{bits_at(fr, mse):.3f}" for fr in nnc_fronts.values()]
                b_ours, b_nnc = bits_at(ours, mse), bits_at(best_nnc, mse)
                print(f"| {mse:.3g} | " + " | ".join(cells) + f" | {b_ours:.3f} | {b_ours / b_nnc:.3f}x |")
            t_nnc = np.median([p["sec"] for p in nnc["NNCodec DQ ls=1"]])
            print(f"(NNCodec DQ quantLayer median time per call here: {t_nnc:.2f} s)")
        print(f"\n{dist}: Pareto points (step/sigma, c, bits/weight, MSE)")
        for m in ["rdoq", "trellis"]:
            pts = ", ".join(
                f"({p['step'] / sigma:.3g}, {p['lam'] / p['step'] ** 2:g}, {p['bpw']:.3f}, {p['mse']:.3g})"
                for p in fronts[m]
            )
            print(f"  {m}: {pts}")
    # Speed at one operating point (step = sigma, c = 0.1), same tensor, side by side.
    w = make("laplacian", shape, sigma)
    step = sigma
    print(f"\n## speed, {shape[0]}x{shape[1]} = {w.size / 1e6:.1f}M weights, step = sigma, lam = 0.1 step^2")
    print("| method | seconds (median of 3) | ns/weight | vs nearest |")
    print("|---|---|---|---|")
    base = None
    for m in ["nearest", "rdoq", "trellis"]:
        t = median_time(lambda m=m: nnpress.quantize(w, step, lam=0.1 * step**2, method=m))
        base = base or t
        print(f"| {m} | {t:.3f} | {t / w.size * 1e9:.0f} | {t / base:.1f}x |")
    chunk = max(1, (1 << 18) // shape[1])  # the .nnp writer's default row blocks (2^18 elements)
    for m in ["rdoq", "trellis"]:
        t = median_time(lambda m=m: nnpress.quantize(w, step, lam=0.1 * step**2, method=m, rows_per_block=chunk))
        print(
            f"| {m}, rows_per_block={chunk} (contexts restart per .nnp block), all cores | {t:.3f} | "
            f"{t / w.size * 1e9:.0f} | {t / base:.1f}x |"
        )
    if args.peers:
        import peers  # path set by nncodec_points

        qp = round(4 * np.log2(step))  # NNCodec qp whose step is closest to sigma
        for use_dq in (False, True):
            t = median_time(lambda dq=use_dq: peers.nncodec_quantize(w, qp, use_dq=dq, lambda_scale=1.0))
            print(
                f"| NNCodec quantLayer {'DQ' if use_dq else 'URQ'}, lambda_scale 1, qp {qp} | {t:.3f} | "
                f"{t / w.size * 1e9:.0f} | {t / base:.1f}x |"
            )
    t_enc = median_time(lambda: nnpress.encode_levels(nnpress.quantize(w, step)))
    print(f"| (encode_levels of the nearest levels, for scale) | {t_enc:.3f} | {t_enc / w.size * 1e9:.0f} | |")
    if not args.quick:
        big = make("laplacian", (4096, 2560), sigma)
        t = median_time(lambda: nnpress.quantize(big, step, lam=0.1 * step**2, method="rdoq"), n=1)
        print(f"\nRDOQ of a {big.size / 1e6:.1f}M-weight tensor (4096x2560): {t:.2f} s")
        t = median_time(lambda: nnpress.quantize(big, step, lam=0.1 * step**2, method="trellis"), n=1)
        print(f"trellis of the same tensor: {t:.2f} s")
        chunk = (1 << 18) // big.shape[1]
        for m in ["rdoq", "trellis"]:
            t = median_time(
                lambda m=m: nnpress.quantize(big, step, lam=0.1 * step**2, method=m, rows_per_block=chunk),
                n=1,
            )
            print(f"{m} of the same tensor, rows_per_block={chunk}, all cores: {t:.2f} s")


if __name__ == "__main__":
    main()
