"""Where the time of one MiniLM Linear layer goes, on the levels of its default ``.nnp``: torch's
``nn.Linear`` against nnpress's ``LevelLinear`` (levels16) and the bare ``LevelMatrix.matmul`` call, one
thread, T tokens (default 14, the median sentence of bench_infer_minilm.py).

    python bench/python/bench_minilm_layers.py --nnp minilm.nnp [--tokens 14] [--rounds 5]

Rows per layer (one attention 384 x 384, the two FFN layers of block 0):
- torch Linear: ``nn.Linear`` on the decompressed float32 weights (bias included);
- LevelLinear: the converted module (``levels16``: int16 activations, bias added in the product);
- matmul int16 / float32: ``LevelMatrix.matmul`` alone (numpy in and out, no bias): the product
  without the module's Python / torch overhead;
- matmul int16, list clipped: the same matrix with every index beyond the dense part's range clipped
  into it (no list entries: what the exact list of large indices costs, by difference; not a valid
  product of the layer);
- matmul int16, 1 token: the per-call floor.
Each call runs after the caches are refilled with other data (in a forward pass a layer's weights
come from memory); median of 30 calls per round, rounds interleaved, calling thread's CPU time
(``time.thread_time``), so other processes on a shared machine do not count. The load average is
printed.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

LAYERS = ("encoder.layer.0.attention.self.query", "encoder.layer.0.intermediate.dense", "encoder.layer.0.output.dense")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnp", required=True, help="the default .nnp of all-MiniLM-L6-v2")
    ap.add_argument("--tokens", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    import nnpress.nn_levels as nl
    from nnpress import _core

    f = nl.NnpFile(args.nnp)
    flush = torch.zeros(8 << 20, dtype=torch.uint8)
    rng = np.random.default_rng(0)
    for name in LAYERS:
        lt = nl.level_tensor(f, name + ".weight")
        bias = nl._bias(f, name)
        rows, cols = lt.u.shape
        w = torch.from_numpy(lt.dequantize().reshape(rows, cols).copy())
        lin = torch.nn.Linear(cols, rows)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(bias)
        lev = nl._Levels(lt, None, 1, "int16")
        mod = nl.LevelLinear(lev, cols, rows, bias, {})
        m = lev.m
        # the dense part's range: the one of the storage rules (levels.h) that leaves exactly the list
        ranges = (127,) if m.index_bits == 8 else (255, 511, 1023, 2047, 32767)
        lim = next(t for t in ranges if int((np.abs(lt.u) > t).sum()) == m.outliers)
        clipped = _core.LevelMatrix.from_levels(
            np.ascontiguousarray(np.clip(lt.u, -lim, lim)), lt.row_scale.astype(np.float32), None
        )
        x = torch.from_numpy(rng.standard_normal((1, args.tokens, cols)).astype(np.float32))
        xn = x.view(args.tokens, cols).numpy()
        x1 = xn[:1].copy()
        calls = {
            "torch Linear": lambda: lin(x),
            "LevelLinear (levels16)": lambda: mod(x),
            "matmul int16": lambda: m.matmul(xn, activations="int16"),
            "matmul float32": lambda: m.matmul(xn),
            "matmul int16, list clipped": lambda: clipped.matmul(xn, activations="int16"),
            "matmul int16, 1 token": lambda: m.matmul(x1, activations="int16"),
        }
        res: dict[str, list[float]] = {k: [] for k in calls}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for k, fn in calls.items():
                    ts = []
                    for _ in range(30):
                        flush.add_(1)
                        t = time.thread_time()
                        fn()
                        ts.append(time.thread_time() - t)
                    res[k].append(float(np.median(ts)))
        print(
            f"\n{name} {rows}x{cols}: int{m.index_bits} dense part (|u| <= {lim}), "
            f"{m.outliers} list entries, {args.tokens} tokens"
        )
        ref = min(res["torch Linear"])
        for k, v in res.items():
            print(f"  {k:28s} {min(v) * 1e6:8.1f} us  (torch / this {ref / min(v):.2f}x)")
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


if __name__ == "__main__":
    main()
