"""LutMatrix against LevelMatrix (int8, float32 activations) on every ISA this CPU runs: 4096 x 4096,
16 values, batch 1 and 16, one thread, the thread's CPU time per product, best of 3 passes over 4
matrices of each kind (32 MB of LutMatrix codes, 64 MB of int8 levels: about the LLC and beyond).

    python bench/python/bench_lut_isa.py
"""

from __future__ import annotations

import os
import time

import numpy as np

from nnpress import _core


def main() -> None:
    rng = np.random.default_rng(0)
    u = rng.integers(-8, 8, (4096, 4096)).astype(np.int32)
    rs = np.full(4096, 0.01, np.float32)
    mats = {
        "lut": [_core.LutMatrix.from_levels(u, rs) for _ in range(4)],
        "levels": [_core.LevelMatrix.from_levels(u, rs) for _ in range(4)],
    }
    isas = [i for i in ("scalar", "avx2", "avx512", "neon") if _core.isa_supported(i)]
    print(f"load {os.getloadavg()[0]:.1f}")
    print("| batch | ISA | LutMatrix µs | LevelMatrix µs | LevelMatrix / LutMatrix |")
    print("|---|---|---|---|---|")
    for b in (1, 16):
        x = rng.standard_normal((b, 4096)).astype(np.float32)
        for isa in isas:
            best = {}
            for name, ms in mats.items():
                best[name] = 1e9
                for _ in range(1 if isa == "scalar" else 3):
                    t = time.thread_time()
                    for m in ms:
                        m.matmul(x, isa=isa)
                    best[name] = min(best[name], (time.thread_time() - t) / len(ms))
            print(
                f"| {b} | {isa} | {best['lut'] * 1e6:.0f} | {best['levels'] * 1e6:.0f} | "
                f"{best['levels'] / best['lut']:.2f} |"
            )
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
