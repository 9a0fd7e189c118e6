"""CER / CSER / dense-codebook products side by side with numpy dense (OpenBLAS), torch dense (MKL),
torch sparse CSR (int32 indices) and scipy CSR, in one run.

    python bench/python/bench_sparse.py                       # 4096^2, 16 and 256 values, batch 1/32, 1 thread
    python bench/python/bench_sparse.py --threads 0           # all threads for every library
    python bench/python/bench_sparse.py --quick               # 16 values only, fewer repeats
    python bench/python/bench_sparse.py --layers              # + all-MiniLM-L6-v2 and digits CNN layer shapes
    python bench/python/bench_sparse.py --e2e                 # + converted digits CNN end to end
    python bench/python/bench_sparse.py --tables out.json     # markdown tables of a saved --json run

Matrices: k distinct values including 0 (density < 1): an entry is non-zero with probability `density`,
drawn uniformly from the k - 1 non-zero levels (k levels at density 1), times 0.01 (as bench_kernels.cpp).
Every method runs once per round, rounds interleaved, so background load hits all of them alike, in an
order shuffled every round (--fixed-order: always the table's order), so no method always follows the same one;
the table shows the minimum over rounds (and the median). GB/s = bytes the format must read (matrix
arrays + inputs + outputs) / time. "picked" = nnpress.sparse.choose_format(..., batch, allow_dense=True), what
nnpress.nn.convert uses;
"dense" there means the layer stays a torch layer, so its time is torch dense's.
"""

from __future__ import annotations

import argparse
import os
import sys


def _threads_from_argv() -> int:
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


_THREADS = _threads_from_argv()
if _THREADS > 0:  # before numpy / torch load their BLAS
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(_THREADS)

import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402
import torch  # noqa: E402

import nnpress  # noqa: E402
from nnpress.sparse import available_isas, choose_format  # noqa: E402

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
warnings.filterwarnings("ignore", message=".*Sparse invariant checks.*")


def make_matrix(rng, rows, cols, values, density):
    nz = values if density >= 1.0 else values - 1
    lv = rng.integers(0, nz, size=(rows, cols)) - nz // 2
    if density < 1.0:
        lv = np.where(lv >= 0, lv + 1, lv)
        lv[rng.random((rows, cols)) >= density] = 0
    return (lv.astype(np.float32) * np.float32(0.01)), lv.astype(np.int32)


ORDER = {"shuffled": True}  # --fixed-order sets False


def torch_csr(w: np.ndarray):
    """torch sparse CSR with int32 indices (2-5x faster than torch's default int64 here)."""
    c = torch.from_numpy(w).to_sparse_csr()
    return torch.sparse_csr_tensor(
        c.crow_indices().to(torch.int32), c.col_indices().to(torch.int32), c.values(), size=c.shape
    )


def timed_rounds(fns: dict, rounds: int, min_time: float) -> dict:
    """Minimum and median µs of each function, one call of each per round. The order of the calls is
    shuffled every round (fixed seed) unless --fixed-order: a call pays for the caches its predecessor
    left cold or warm (code, dispatch, data), and a fixed order would favour the same method every round
    (torch CSR always after torch dense, which warms torch's dispatch; bench/RESULTS.md)."""
    for f in fns.values():  # warm up
        f()
    samples = {k: [] for k in fns}
    keys = list(fns)
    rng = np.random.default_rng(0)
    t_start = time.perf_counter()
    r = 0
    while r < rounds or (time.perf_counter() - t_start < min_time and r < 50 * rounds):
        order = [keys[i] for i in rng.permutation(len(keys))] if ORDER["shuffled"] else keys
        for k in order:
            f = fns[k]
            t = time.perf_counter()
            f()
            samples[k].append(time.perf_counter() - t)
        r += 1
    return {k: (1e6 * min(v), 1e6 * float(np.median(v))) for k, v in samples.items()}


def bench_case(rng, rows, cols, values, density, batch, threads, rounds, min_time):
    w, levels = make_matrix(rng, rows, cols, values, density)
    x = rng.standard_normal((cols, batch) if batch > 1 else cols).astype(np.float32)
    xy_bytes = 4 * (cols * batch + rows * batch)
    tw, tx = torch.from_numpy(w), torch.from_numpy(x)
    tcsr = torch_csr(w)
    sp = scipy.sparse.csr_matrix(w)
    nnz = sp.nnz
    csr_bytes = sp.data.nbytes + sp.indices.nbytes + sp.indptr.nbytes
    ours = {
        "cer": nnpress.CERMatrix.from_levels(levels, 0.01),
        "cser": nnpress.CSERMatrix.from_levels(levels, 0.01),
    }
    if values <= 16:
        ours["codebook"] = nnpress.CodebookMatrix.from_levels(levels, 0.01)
    cser = ours["cser"]
    picked_format = choose_format(cser.shape, cser.nnz, len(cser.values), batch, allow_dense=True)
    nt = threads  # 0 = all hardware threads in nnpress
    fns = {
        "numpy dense": lambda: w @ x,
        "torch dense": lambda: tw @ tx,
        "torch CSR i32": lambda: tcsr @ tx,
        "scipy CSR": lambda: sp @ x,
    }
    for name, m in ours.items():
        fns["nnpress " + name] = lambda m=m: m.matmul(x, threads=nt)
    storage = {
        "numpy dense": w.nbytes,
        "torch dense": w.nbytes,
        "torch CSR i32": nnz * 8 + (rows + 1) * 4,
        "scipy CSR": csr_bytes,
    }
    storage.update({"nnpress " + k: m.nbytes for k, m in ours.items()})
    times = timed_rounds(fns, rounds, min_time)
    # Check every result against numpy (float64 reference tolerance).
    ref = w.astype(np.float64) @ x.astype(np.float64)
    bound = np.abs(w).astype(np.float64) @ np.abs(x).astype(np.float64)
    for name, m in ours.items():
        y = m.matmul(x, threads=nt)
        assert np.all(np.abs(y - ref) <= 1e-5 * bound + 1e-5), name
    peers = ["numpy dense", "torch dense", "torch CSR i32", "scipy CSR"]
    best_peer = min(peers, key=lambda k: times[k][0])
    # "dense" = nnpress keeps the float matrix (nn.convert leaves the torch layer): torch dense's time.
    picked_key = "torch dense" if picked_format == "dense" else "nnpress " + picked_format
    res = {
        "rows": rows,
        "cols": cols,
        "values": values,
        "density": density,
        "batch": batch,
        "nnz": int(nnz),
        "times_us": {k: {"min": round(v[0], 1), "median": round(v[1], 1)} for k, v in times.items()},
        "storage_bytes": {k: int(v) for k, v in storage.items()},
        "gbps": {k: round((storage[k] + xy_bytes) / (times[k][0] * 1e3), 2) for k in times},
        "picked": picked_format,
        "best_peer": best_peer,
        "speedup_vs_best_peer": round(times[best_peer][0] / times[picked_key][0], 2),
        "speedup_vs_torch_dense": round(times["torch dense"][0] / times[picked_key][0], 2),
        "cser_vs_torch_csr": round(times["torch CSR i32"][0] / times["nnpress cser"][0], 2),
        "cser_storage_vs_scipy_csr": round(storage["nnpress cser"] / csr_bytes, 3),
    }
    return res


def print_case(r):
    head = f"{r['rows']}x{r['cols']} values={r['values']} density={r['density']} batch={r['batch']} (nnz {r['nnz']})"
    print(f"\n### {head}")
    print(f"{'method':16s} {'min us':>10s} {'median us':>10s} {'GB/s':>7s} {'storage B':>11s}")
    for k, t in r["times_us"].items():
        print(f"{k:16s} {t['min']:10.1f} {t['median']:10.1f} {r['gbps'][k]:7.2f} {r['storage_bytes'][k]:11d}")
    print(
        f"picked: {r['picked']}; vs best peer ({r['best_peer']}): {r['speedup_vs_best_peer']}x; "
        f"vs torch dense: {r['speedup_vs_torch_dense']}x; CSER vs torch CSR: {r['cser_vs_torch_csr']}x; "
        f"CSER bytes / scipy CSR bytes: {r['cser_storage_vs_scipy_csr']}"
    )


def summary_table(results):
    lines = [
        "| shape | values | density | batch | picked | picked µs | best peer | peer µs | ×best peer | ×torch dense "
        "| CSER µs | torch CSR µs | CSER bytes / scipy CSR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["times_us"]
        pk = "torch dense" if r["picked"] == "dense" else "nnpress " + r["picked"]
        lines.append(
            f"| {r['rows']}×{r['cols']} | {r['values']} | {r['density']} | {r['batch']} | {r['picked']} | "
            f"{t[pk]['min']:.0f} | {r['best_peer']} | {t[r['best_peer']]['min']:.0f} | "
            f"{r['speedup_vs_best_peer']} | {r['speedup_vs_torch_dense']} | {t['nnpress cser']['min']:.0f} | "
            f"{t['torch CSR i32']['min']:.0f} | {r['cser_storage_vs_scipy_csr']} |"
        )
    return "\n".join(lines)


def method_tables(results):
    """Markdown tables of every method's µs, GB/s and storage (MB) per case, for bench/RESULTS.md."""
    methods = [
        "numpy dense",
        "torch dense",
        "torch CSR i32",
        "scipy CSR",
        "nnpress cer",
        "nnpress cser",
        "nnpress codebook",
    ]
    head = "| shape | values | density | batch | " + " | ".join(methods) + " |\n|" + "---|" * (4 + len(methods))
    out = []
    for title, key, fmt, batch1 in (
        ("All methods, µs (minimum over rounds)", "times_us", lambda r, m: f"{r['times_us'][m]['min']:.0f}", False),
        (
            "Effective GB/s (bytes each format must read: its arrays + x + y, over the minimum time), batch 1",
            "gbps",
            lambda r, m: f"{r['gbps'][m]:.1f}",
            True,
        ),
        ("Storage, MB", "storage_bytes", lambda r, m: f"{r['storage_bytes'][m] / 1e6:.2f}", True),
    ):
        lines = [title + ":", "", head]
        for r in results:
            if batch1 and r["batch"] != 1:
                continue
            cells = [fmt(r, m) if m in r[key] else "–" for m in methods]
            lines.append(
                f"| {r['rows']}×{r['cols']} | {r['values']} | {r['density']} | {r['batch']} | "
                + " | ".join(cells)
                + " |"
            )
        out.append("\n".join(lines))
    return "\n\n".join(out)


def bench_e2e(threads, rounds):
    from torch import nn

    import nnpress.nn as nnn
    from nnpress.demo_models import load_digits_data, train_digits_model

    data = load_digits_data()
    model = train_digits_model("cnn", seed=0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                step = float(m.weight.abs().max()) / 7
                m.weight.copy_(torch.round(m.weight / step) * step)
    x = torch.from_numpy(data.x_test)
    out = {}
    for batch_name, xb in (("all test images", x), ("one image", x[:1])):
        fast = nnn.convert(model, threads=threads, batch=xb.shape[0])
        with torch.no_grad():
            t = timed_rounds({"torch dense": lambda: model(xb), "nnpress converted": lambda: fast(xb)}, rounds, 0.5)
            same = bool(torch.equal(model(x).argmax(1), fast(x).argmax(1)))
        out[batch_name] = {
            "batch": int(xb.shape[0]),
            "us": {k: round(v[0], 1) for k, v in t.items()},
            "same_predictions": same,
            "formats": [r["format"] for r in nnn.plan(model, batch=xb.shape[0])],
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--values", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1, 0.01])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=1, help="threads for every library (0 = all)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds per case at least")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fixed-order", action="store_true", help="call the methods in the same order every round")
    ap.add_argument("--layers", action="store_true", help="also MiniLM-L6 and digits CNN layer shapes")
    ap.add_argument("--e2e", action="store_true", help="also the converted digits CNN end to end")
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--tables", metavar="JSON", help="only print the markdown tables of a saved --json run")
    args = ap.parse_args()
    if args.tables:
        with open(args.tables) as f:
            saved = json.load(f)
        print(json.dumps(saved["info"]))
        print(summary_table(saved["results"]) + "\n\n" + method_tables(saved["results"]))
        if saved.get("e2e"):
            print("\nconverted digits CNN:", json.dumps(saved["e2e"]))
        return
    if args.quick:
        args.values, args.rounds, args.min_time = [16], 7, 0.3
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ORDER["shuffled"] = not args.fixed_order
    rng = np.random.default_rng(0)
    info = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "nnpress_isas": available_isas(),
        "command": " ".join(["python"] + sys.argv),
        "call_order": "shuffled per round" if ORDER["shuffled"] else "fixed",
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    print(json.dumps(info))
    shapes = [(args.n, args.n)]
    if args.layers:
        shapes += [(384, 384), (1536, 384), (384, 1536), (120, 256)]
    results = []
    for rows, cols in shapes:
        for values in args.values:
            for density in args.densities:
                for batch in args.batches:
                    r = bench_case(rng, rows, cols, values, density, batch, args.threads, args.rounds, args.min_time)
                    print_case(r)
                    results.append(r)
    print("\n" + summary_table(results))
    e2e = bench_e2e(args.threads, args.rounds) if args.e2e else None
    if e2e:
        print("\nconverted digits CNN:", json.dumps(e2e))
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"info": info, "results": results, "e2e": e2e}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
