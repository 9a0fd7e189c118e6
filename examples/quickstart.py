"""Smallest end-to-end use of the level coder: quantize a layer-shaped tensor, code, decode.

python examples/quickstart.py
"""

import time

import numpy as np

import nnpress

rng = np.random.default_rng(0)
w = (rng.standard_normal((1024, 4096)) * 0.02).astype(np.float32)  # a 4M-weight layer
step = 0.004
levels = np.rint(w / step).astype(np.int32)

t0 = time.perf_counter()
data = nnpress.encode_levels(levels)
t1 = time.perf_counter()
back = nnpress.decode_levels(data)
t2 = time.perf_counter()
assert np.array_equal(back, levels)

_, counts = np.unique(levels, return_counts=True)
h0 = -(counts * np.log2(counts / counts.sum())).sum() / levels.size
print(f"weights            {w.size:,} float32 = {w.nbytes / 1e6:.1f} MB")
print(
    f"coded              {len(data) / 1e6:.3f} MB  ({8 * len(data) / w.size:.3f} bits/weight, "
    f"{w.nbytes / len(data):.1f}x)"
)
print(f"empirical entropy  {h0:.3f} bits/weight; coder estimate {nnpress.estimate_bits(levels) / w.size:.3f}")
print(f"encode {1e3 * (t1 - t0):.0f} ms, decode {1e3 * (t2 - t1):.0f} ms, round trip exact")
print(f"max |w - w_hat|    {np.abs(w - back * step).max():.5f} (step/2 = {step / 2})")
