"""nnpress's trellis against NNCodec 2.1.3's dependent quantization on all-MiniLM-L6-v2, side by side.

    python bench/python/bench_trellis_vs_nncodec.py --nncodec-python /work/venvs/nnc/bin/python \
        [--rounds 2] [--with-rate] [--no-compress] [--baseline-python PY]

Run it with an interpreter whose nnpress is the build to measure; ``--baseline-python`` names one
whose nnpress is another build (say main's, before a change), whose nnpress configurations then run
in the same rounds, alternating with the others (the levels and the compressed files must match).
Every configuration runs in its own worker interpreter, the configurations alternate within each
round (the machine may be shared), and each worker reports wall and CPU seconds; the tables give
medians, ratios and the load average seen by each run.

* Quantizer throughput, on MiniLM's 40 weight matrices (22.7 M weights), at NNCodec's qp -38 step
  (2^(-38/4)): nnpress ``quantize(method="trellis")`` (lam = 0.24 step^2, rate priced from the live
  contexts of every state, rows per block as ``compress`` sets them) with one thread (tensors one
  after the other) and with all cores (tensors concurrently, as ``compress`` runs them), against
  NNCodec's ``Encoder.quantLayer`` with dependent quantization, the call its ``compress`` makes
  (lambda_scale 0, its default: a distortion-only trellis that prices no rate). Only the quantizer
  calls are timed. NNCodec's binding holds the GIL, so it runs on one thread whatever the pool.
  ``--with-rate`` adds NNCodec's DQ with lambda_scale 1 (its trellis priced from per-state CABAC
  contexts, what nnpress does), one round.
* Whole file: ``nnpress compress`` of the model (the default config: the trellis everywhere) with 1
  and all threads, against NNCodec's encode at qp -38 with dependent quantization
  (``peers.nncodec_compress_state_dict``), wall and CPU time of the call.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
QP = -38
LAM_SCALE = 0.24
BLOCK_ELEMENTS = 1 << 18


def safetensors_path() -> str:
    sys.path.insert(0, HERE)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import minilm

    files = glob.glob(os.path.join(minilm.model_path(), "*.safetensors"))
    if len(files) != 1:
        raise SystemExit(f"expected one .safetensors file in {minilm.model_path()}, found {files}")
    return files[0]


def save_tensors(path: str, npz: str) -> int:
    """All float tensors of the checkpoint to ``npz`` (workers need only numpy); returns the number of
    weights in its 2-D float tensors (the ones the throughput runs quantize)."""
    from safetensors.numpy import load_file

    d = {k: np.ascontiguousarray(v) for k, v in load_file(path).items() if v.dtype.kind == "f"}
    np.savez(npz, **d)
    return sum(v.size for v in d.values() if v.ndim == 2)


def matrices(npz: str) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in np.load(npz).items() if v.ndim == 2}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------
# workers: each prints one JSON line
# ---------------------------------------------------------------------------------------------


def work_nnpress_quant(npz: str, threads: int) -> dict:
    import nnpress

    mats = matrices(npz)
    step = 2.0 ** (QP / 4.0)
    lam = LAM_SCALE * step * step

    def one(name: str) -> np.ndarray:
        w = mats[name]
        rpb = max(1, min(w.shape[0], BLOCK_ELEMENTS // w.shape[1]))
        return nnpress.quantize(w, step, lam=lam, method="trellis", threads=threads, rows_per_block=rpb)

    out = {}
    if threads == 1:  # one tensor after the other
        t0, c0 = time.perf_counter(), time.process_time()
        for name in mats:
            out[name] = one(name)
    else:  # tensors concurrently on all cores (big ones first), row blocks too, as compress runs them
        from concurrent.futures import ThreadPoolExecutor

        names = sorted(mats, key=lambda k: -mats[k].size)
        t0, c0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            out = dict(zip(names, pool.map(one, names)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    digest = hashlib.sha1()
    for k in sorted(out):  # after the clock: the levels, to check every run chose the same
        digest.update(np.ascontiguousarray(out[k], dtype=np.int32).tobytes())
    digest = digest.hexdigest()
    return {"wall": wall, "cpu": cpu, "weights": sum(w.size for w in mats.values()), "levels": digest}


def work_nncodec_quant(npz: str, lambda_scale: float) -> dict:
    sys.path.insert(0, HERE)
    import peers

    peers.import_nncodec()
    mats = matrices(npz)
    wall = cpu = 0.0
    for w in mats.values():  # only the quantizer calls
        t0, c0 = time.perf_counter(), time.process_time()
        peers.nncodec_quantize(w, QP, use_dq=True, lambda_scale=lambda_scale)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "weights": sum(w.size for w in mats.values())}


def work_nnpress_compress(path: str, threads: int) -> dict:
    import nnpress.cli

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "minilm.nnp")
        t0, c0 = time.perf_counter(), time.process_time()
        rc = nnpress.cli.main(["compress", "--threads", str(threads), path, out])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if rc not in (0, None):
            raise SystemExit(f"nnpress compress returned {rc}")
        with open(out, "rb") as fh:
            sha = hashlib.sha256(fh.read()).hexdigest()
        return {"wall": wall, "cpu": cpu, "bytes": os.path.getsize(out), "sha256": sha}


def work_nncodec_compress(npz: str) -> dict:
    sys.path.insert(0, HERE)
    import peers

    peers.import_nncodec()
    sd = dict(np.load(npz))
    t0, c0 = time.perf_counter(), time.process_time()
    data, info = peers.nncodec_compress_state_dict(sd, qp=QP, use_dq=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "bytes": len(data), "quantize_s": info.get("quantize_s")}


def worker(args: argparse.Namespace) -> None:
    with open(os.devnull, "w") as quiet:  # the workers' own chatter (NNCodec prints progress)
        real = sys.stdout
        sys.stdout = quiet
        try:
            before = load()
            kind = args.worker
            if kind == "nnpress-quant":
                r = work_nnpress_quant(args.npz, args.threads)
            elif kind == "nncodec-quant":
                r = work_nncodec_quant(args.npz, args.lambda_scale)
            elif kind == "nnpress-compress":
                r = work_nnpress_compress(args.model, args.threads)
            else:
                r = work_nncodec_compress(args.npz)
            r["load"] = [before, load()]
        finally:
            sys.stdout = real
    print(json.dumps(r))


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def run(py: str, argv: list[str]) -> dict:
    out = subprocess.run([py, os.path.abspath(__file__), *argv], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def med(rs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in rs]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nncodec-python", help="an interpreter with nncodec 2.1.3 (required)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--with-rate", action="store_true", help="also NNCodec DQ with lambda_scale 1 (one round)")
    ap.add_argument("--no-compress", action="store_true", help="only the quantizer throughput")
    ap.add_argument(
        "--baseline-python",
        help="an interpreter with another nnpress build, measured in the same rounds (before/after)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--npz", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--lambda-scale", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.nncodec_python:
        ap.error("--nncodec-python is required")

    import nnpress

    cores = os.cpu_count() or 1
    model = safetensors_path()
    here_py, nnc_py = sys.executable, args.nncodec_python
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "minilm.npz")
        n = save_tensors(model, npz)
        print(
            f"# all-MiniLM-L6-v2, {n / 1e6:.2f} M weights in its weight matrices; nnpress {nnpress.__version__} "
            f"(commit {commit.stdout.strip() or '?'}), NNCodec 2.1.3; {cores} cores; {args.rounds} rounds, "
            f"configurations alternating; load average at start {load()}"
        )
        base_py = args.baseline_python
        quant = [
            ("nnpress trellis", "1", here_py, ["--worker", "nnpress-quant", "--threads", "1"]),
            ("NNCodec DQ (lambda_scale 0, its default)", "1", nnc_py, ["--worker", "nncodec-quant"]),
            ("nnpress trellis", f"all ({cores})", here_py, ["--worker", "nnpress-quant", "--threads", str(cores)]),
        ]
        comp = [
            ("nnpress compress (default: trellis)", "1", here_py, ["--worker", "nnpress-compress", "--threads", "1"]),
            ("NNCodec encode qp -38 DQ", "1", nnc_py, ["--worker", "nncodec-compress"]),
            (
                "nnpress compress (default: trellis)",
                f"all ({cores})",
                here_py,
                ["--worker", "nnpress-compress", "--threads", str(cores)],
            ),
        ]
        # The baseline build's configurations, after all the others (indices 6.. in `configs`).
        base = []
        if base_py:
            base = [(f"{label} [baseline]", t, base_py, argv) for label, t, _, argv in (quant[0], quant[2])]
            if not args.no_compress:
                base += [(f"{label} [baseline]", t, base_py, argv) for label, t, _, argv in (comp[0], comp[2])]
        configs = quant + ([] if args.no_compress else comp)
        n_main = len(configs)
        configs = configs + base
        res: dict[int, list[dict]] = {i: [] for i in range(len(configs))}
        rate_run = None
        for rnd in range(args.rounds):
            for i, (label, threads, py, argv) in enumerate(configs):
                res[i].append(run(py, [*argv, "--npz", npz, "--model", model]))
                print(f"  round {rnd + 1}: {label}, {threads} thread(s): {json.dumps(res[i][-1])}", flush=True)
            if args.with_rate and rate_run is None:
                rate_run = run(nnc_py, ["--worker", "nncodec-quant", "--lambda-scale", "1", "--npz", npz])
                print(f"  round {rnd + 1}: NNCodec DQ lambda_scale 1: {json.dumps(rate_run)}", flush=True)

    base_ix = list(range(n_main, len(configs)))
    levels = {r["levels"] for i in (0, 2, *base_ix[:2]) for r in res[i]}
    print(f"\nnnpress levels identical over all runs, thread counts and builds: {len(levels) == 1} ({sorted(levels)})")
    if not args.no_compress:
        files = {r["sha256"] for i in (3, 5, *base_ix[2:]) for r in res[i]}
        print(
            f"nnpress compress files identical over all runs, thread counts and builds: {len(files) == 1} "
            f"{sorted(files)}"
        )
    nnc = res[1]
    nnc_wall, nnc_cpu = med(nnc, "wall"), med(nnc, "cpu")
    print(
        "\n| quantizer | threads | wall s | CPU s | M weights / s wall | M weights / CPU s | vs NNCodec DQ (wall) "
        "| vs NNCodec DQ (CPU) | load during runs |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    rows = [(configs[i][0], configs[i][1], res[i]) for i in (0, 1, 2, *base_ix[:2])]
    if rate_run:
        rows.append(("NNCodec DQ (lambda_scale 1: rate from per-state contexts)", "1", [rate_run]))
    for label, threads, rs in rows:
        wall, cpu = med(rs, "wall"), med(rs, "cpu")
        loads = ", ".join(f"{r['load'][0][0]}-{r['load'][1][0]}" for r in rs)
        print(
            f"| {label} | {threads} | {wall:.2f} | {cpu:.2f} | {n / wall / 1e6:.2f} | {n / cpu / 1e6:.2f} "
            f"| {nnc_wall / wall:.2f}x | {nnc_cpu / cpu:.2f}x | {loads} |"
        )
    if args.no_compress:
        return
    enc = res[4]
    enc_wall = med(enc, "wall")
    print("\n| encode | threads | bytes | wall s | CPU s | wall / NNCodec's | load during runs |")
    print("|---|---|---:|---:|---:|---:|---|")
    for i in (3, 4, 5, *base_ix[2:]):
        label, threads, _, _ = configs[i]
        rs = res[i]
        wall, cpu = med(rs, "wall"), med(rs, "cpu")
        loads = ", ".join(f"{r['load'][0][0]}-{r['load'][1][0]}" for r in rs)
        extra = f" (its quantize stage {med(rs, 'quantize_s'):.2f} s)" if i == 4 and rs[0].get("quantize_s") else ""
        print(
            f"| {label}{extra} | {threads} | {rs[0]['bytes']:,} | {wall:.2f} | {cpu:.2f} | {wall / enc_wall:.2f} "
            f"| {loads} |"
        )


if __name__ == "__main__":
    main()
