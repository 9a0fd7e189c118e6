"""Level coder side by side: nnpress vs NNCodec's DeepCABAC engine vs zstd/xz, in one run.

    python bench/python/bench_coder.py [--n 1000000] [--repeat 3]

Same int32 level arrays for every coder; sizes in bytes; times are the best of --repeat runs of
the coder call alone (one thread). NNCodec runs with its defaults for a weight tensor
(cabac_unary_length 11, parameter optimisation on, no dependent quantization); see peers.py.
Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nnpress
import peers


def h0_bytes(a: np.ndarray) -> float:
    _, c = np.unique(a, return_counts=True)
    return float(-(c * np.log2(c / c.sum())).sum() / 8)


def geometric(n: int, theta: float, rng) -> np.ndarray:
    m = rng.geometric(1 - theta, n) - 1
    return (m * (rng.integers(0, 2, n) * 2 - 1)).astype(np.int32)


def datasets(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    rows = 1000
    cols = n // rows
    out = {}
    for theta, label in [(0.45, "geom H~2"), (0.8, "geom H~4.4"), (0.92, "geom H~6")]:
        out[f"{label} iid"] = geometric(rows * cols, theta, rng).reshape(rows, cols)
    w = rng.standard_normal((rows, cols)) * rng.lognormal(0, 0.3, (rows, 1))
    out["gauss layer, step sigma/8"] = np.rint(w * 8).astype(np.int32)
    pr = np.rint(w * 4).astype(np.int32)
    pr[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0
    out["90% pruned layer"] = pr
    lap = np.rint(rng.laplace(0, 300, (rows, cols))).astype(np.int32)
    out["laplace scale 300"] = lap
    return out


def best_time(fn, repeat):
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return res, best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    peers.import_nncodec()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
        f"numpy {np.__version__}; one thread; n = {args.n:,} levels per array\n"
    )
    print(
        "| data | H0 B | nnpress B | NNCodec B | nnpress/NNCodec size | zstd-19 B | xz-9 B | "
        "nnpress enc ms | NNCodec enc ms | nnpress dec ms | NNCodec dec ms | dec speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, a in datasets(args.n).items():
        data, t_enc = best_time(lambda: nnpress.encode_levels(a), args.repeat)
        out, t_dec = best_time(lambda: nnpress.decode_levels(data), args.repeat)
        assert np.array_equal(out, a)
        nn = peers.nncodec_level_coder_timing(a, repeat=args.repeat)
        assert nn["roundtrip_ok"]
        print(
            f"| {name} | {h0_bytes(a):,.0f} | {len(data):,} | {nn['nbytes']:,} | "
            f"{len(data) / nn['nbytes']:.4f} | {peers.zstd_size(a):,} | {peers.xz_size(a):,} | "
            f"{1e3 * t_enc:.1f} | {1e3 * nn['encode_s']:.1f} | {1e3 * t_dec:.1f} | "
            f"{1e3 * nn['decode_s']:.1f} | {nn['decode_s'] / t_dec:.2f}x |"
        )


if __name__ == "__main__":
    main()
