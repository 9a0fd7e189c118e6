"""The trellis gives the same levels, reconstruction and rate under every ISA this CPU runs
(NNPRESS_ISA caps the kernel choice; read once per process, so each ISA runs in a subprocess): layer-like
float32 and float64 weights (the passes the fused AVX2 / AVX-512 steps run whole), with importance,
row and column scales, row blocks, row feedback (per-row passes with carried contexts), column
feedback (the per-state search), and outliers whose Exp-Golomb buckets reach the shared last prefix
model (the kernel-set search)."""

import os
import subprocess
import sys

from nnpress.sparse import available_isas

PROBE = """
import hashlib, numpy as np, nnpress
rng = np.random.default_rng(3)
h = hashlib.sha1()
step = 2.0 ** -9.5
for case in range(12):
    rows, cols = 24 + case, 96 + 7 * case
    w = rng.normal(0.0, 0.04 * (1 + case % 3), (rows, cols))
    w[rng.random((rows, cols)) < 0.03] = 0.0
    if case % 4 == 3:
        w[0, 5] = 3.0e5 * step  # an outlier: a bucket on the shared last prefix model
    w = w.astype(np.float32 if case % 2 else np.float64)
    kw = dict(lam=0.24 * step * step * (case % 5), method="trellis", threads=1)
    if case % 3 == 1 and case != 7:  # (column feedback needs importance constant along rows)
        kw["importance"] = rng.uniform(0.0, 2.0, (rows, cols))
    if case % 4 == 2:
        kw["row_scale"] = 2.0 ** rng.integers(-2, 3, rows)
        kw["col_scale"] = 2.0 ** rng.integers(-2, 3, cols)
    if case % 3 == 2:
        kw["rows_per_block"] = 5
    if case in (5, 9):
        a = rng.normal(size=(rows, 2 * rows))
        kw["row_hessian"] = a @ a.T / (2 * rows)
    if case == 7:
        a = rng.normal(size=(cols, 2 * cols))
        kw["hessian"] = a @ a.T / (2 * cols)
    q, w_hat, info = nnpress.quantize_info(w, step, **kw)
    nearest = nnpress.quantize(w, step, method="nearest", row_scale=kw.get("row_scale"), col_scale=kw.get("col_scale"))
    print("differ", int((q != nearest).sum()))
    h.update(np.ascontiguousarray(q, np.int32).tobytes())
    h.update(np.ascontiguousarray(w_hat, np.float32).tobytes())
    h.update(repr(sorted((k, v) for k, v in info.items() if k != "seconds")).encode())
print("digest", h.hexdigest())
"""


def run_with(isa: str) -> list[str]:
    env = dict(os.environ, NNPRESS_ISA=isa)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_trellis_same_on_every_isa():
    isas = [i for i in ("scalar", "avx2", "avx512") if i in available_isas()]
    outs = {isa: run_with(isa) for isa in isas}
    ref = outs["scalar"]
    assert ref[-1].startswith("digest ")
    # The search is not trivial: in most cases it moves many levels off the nearest ones.
    assert sum(int(line.split()[1]) > 50 for line in ref[:-1]) >= 8
    for isa in isas:  # the digest covers levels, reconstruction and the reported info
        assert outs[isa] == ref, isa
