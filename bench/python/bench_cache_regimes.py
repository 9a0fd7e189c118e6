"""One 4096^2 batch-1 product in three cache regimes, nnpress CSER / CER next to torch CSR (int32), one thread.

    python bench/python/bench_cache_regimes.py                     # 16 values, density 0.01
    python bench/python/bench_cache_regimes.py --values 256 --density 0.1

Regimes (minimum and median over rounds, µs):
  hot         the same product again right away: matrix, input and code in cache;
  data cold   a 64 MB numpy product first (flushes L2 and L3), then a 64-row product of the same method
              (its code and dispatch warm again), then the timed product: a model layer whose weights
              were evicted by the layers before it;
  all cold    the 64 MB product right before the timed one: matrix, input and code all cold.
bench_sparse.py's shuffled rounds fall between these (each method's predecessor varies).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

import nnpress  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sparse import make_matrix, torch_csr  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=16)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    w, levels = make_matrix(rng, 4096, 4096, args.values, args.density)
    ws, ls = make_matrix(rng, 64, 4096, args.values, args.density)
    x = rng.standard_normal(4096).astype(np.float32)
    tx = torch.from_numpy(x)
    big = np.ones((4096, 4096), np.float32)
    methods = {"torch CSR i32": (lambda m=torch_csr(w): m @ tx, lambda m=torch_csr(ws): m @ tx)}
    for name, cls in (("nnpress cser", nnpress.CSERMatrix), ("nnpress cer", nnpress.CERMatrix)):
        methods[name] = (lambda m=cls.from_levels(levels, 0.01): m @ x, lambda m=cls.from_levels(ls, 0.01): m @ x)

    def timed(f) -> float:
        t = time.perf_counter()
        f()
        return 1e6 * (time.perf_counter() - t)

    res: dict = {}
    for _ in range(args.rounds):
        for name, (f, small) in methods.items():
            big @ x
            res.setdefault(("all cold", name), []).append(timed(f))
            big @ x
            small()
            res.setdefault(("data cold", name), []).append(timed(f))
            res.setdefault(("hot", name), []).append(timed(f))
    print(
        f"4096x4096, {args.values} values, density {args.density}, batch 1, one thread; "
        f"load average {os.getloadavg()[0]:.2f}; min / median us"
    )
    print("| regime | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods))
    for regime in ("hot", "data cold", "all cold"):
        cells = [f"{min(v):.1f} / {np.median(v):.1f}" for v in (res[(regime, n)] for n in methods)]
        print(f"| {regime} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
