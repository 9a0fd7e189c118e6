"""Weights-streamed stacks: a whole forward pass through a stack of rows x cols layers whose weights
together exceed the last-level cache, batch 1 (or `--batch` tokens), one thread, every method side by side.

    python bench/python/bench_stack.py                               # densities 1, 0.25, 0.1, 0.01
    python bench/python/bench_stack.py --densities 0.1,0.01 --stack-mb 1500 --rounds 7
    python bench/python/bench_stack.py --densities 0.1 --sweep       # per-layer time vs stack size
    python bench/python/bench_stack.py --json out.json --md out.md
    python bench/python/bench_stack.py --densities 1 --batch 16      # 16 tokens per product

What is measured
  Layer k + 1's input is layer k's output, renormalised (x <- y * sqrt(cols) / |y| per token, the same numpy
  code for every method) so that values stay finite over any depth: one forward pass of the whole stack per method
  and round, the methods in an order shuffled every round (the same load hits all of them), `--rounds`
  rounds; the tables give the minimum and the median per-layer µs (pass time / layers), and, against torch CSR,
  each round's ratio of the two times (same round, same load) and the median of those ratios.
  Each method's stack holds `--stack-mb` MB of its own weights or more (at least `--min-layers` layers), so
  every method streams its weights from memory: the stacks are as deep as that takes, and differ per
  method (a 64 MB dense layer needs fewer layers than a 0.4 MB CSER layer). The layers are copies, each in
  its own memory, of `--distinct` independently drawn matrices (cycled): caches see distinct addresses,
  which is all that streaming needs, and building thousands of 4096^2 matrices from scratch would take
  longer than the benchmark.
  Matrices: `--values` distinct values including 0 (bench_sparse.make_matrix: an entry is non-zero with
  probability `density`, drawn uniformly from the non-zero levels; W = level * 0.01).
  The renormalisation's own cost (same code, output in cache, no product) is printed as "renorm µs"; it is
  inside every per-layer time.
  Fidelity: the max relative error of each method's final output against the same chain computed in
  float64 from the same float32 weights (max |y - ref| / max |ref|).
  Times are the thread's CPU time by default (`--clock cpu`: on a shared machine, time the process spends
  descheduled does not count; `--clock wall` for wall time).
  `--also-isa avx2`: CSER and CER also with that ISA forced, over the same stacks (one run, before/after a
  change of the automatic kernel choice).
  `--sweep`: per-layer time of each method over the first layers of its stack (at least one layer), for
  stack sizes from 1 MiB doubling up to `--stack-mb`: where the per-layer time stops falling as the stack grows, the
  weights come from memory (this VM reports a 480 MiB L3; the sweep shows the regime actually reached).

Methods: torch dense fp32 (`torch.mv`; `--batch` > 1: `torch.mm(X, W.T)`), torch CSR with int32 indices, nnpress
CSER, CER, codebook (<= 16 values), LevelMatrix (the integer-level dense kernel, `nnpress._core.LevelMatrix`, when
the build has it; row_scale = the step, float32 activations, and "LevelMatrix int16" over the same stack:
activations rounded to int16 per product, levels.h), LutMatrix (<= 16 values per row: 4-bit codes and a 16-value
table per row, kernels/lut.h). At `--batch` > 1 the tokens are the rows of X (batch x cols, a torch Linear
input); torch CSR and the CER/CSER/codebook kernels take X as columns (cols x batch): their time includes that
transpose (numpy copies), as a forward pass between Linear layers would pay it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

import nnpress  # noqa: E402
from nnpress import _core  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sparse import make_matrix  # noqa: E402

STEP = 0.01


def llc_bytes() -> int:
    """The last-level cache size the OS reports (0 if unknown)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            try:
                with open(os.path.join(base, d, "level")) as f:
                    level = int(f.read())
                with open(os.path.join(base, d, "size")) as f:
                    s = f.read().strip()
            except OSError:
                continue
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1], 1)
            size = int(s[:-1] if s[-1] in "KMG" else s) * mult
            if level >= 2:
                best = max(best, size)
    except OSError:
        pass
    return best


def renorm(y: np.ndarray, x: np.ndarray, c: float) -> None:
    """x <- y * c / |y| (float32 numpy; y, x of the same shape: a vector, or one token per row)."""
    if y.ndim == 1:
        s = float(np.dot(y, y))
        np.multiply(y, np.float32(c / math.sqrt(s)) if s > 0 else np.float32(1.0), out=x)
        return
    s = np.einsum("ij,ij->i", y, y)
    f = np.where(s > 0, np.float32(c) / np.sqrt(np.where(s > 0, s, 1)), np.float32(1.0)).astype(np.float32)
    np.multiply(y, f[:, None], out=x)


class Method:
    """A stack of layers of one method and its forward pass."""

    def __init__(self, name: str, layers: list, layer_bytes: int, product, cols: int, batch: int = 1):
        self.name, self.layers, self.layer_bytes, self.product = name, layers, layer_bytes, product
        # the input buffer every layer reads (torch shares it): a vector, or batch x cols
        self.x = np.empty(cols if batch == 1 else (batch, cols), np.float32)
        self.tx = torch.from_numpy(self.x)

    def forward(self, x0: np.ndarray, n: int | None = None) -> np.ndarray:
        x, c = self.x, math.sqrt(x0.shape[-1])
        x[:] = x0
        y = x0
        for m in self.layers[: n or len(self.layers)]:
            y = self.product(self, m)
            renorm(y, x, c)
        return x.copy()


def torch_dense_product(meth: Method, w) -> np.ndarray:
    return torch.mv(w, meth.tx).numpy() if meth.x.ndim == 1 else torch.mm(meth.tx, w.t()).numpy()


def torch_csr_product(meth: Method, w) -> np.ndarray:
    if meth.x.ndim == 1:
        return (w @ meth.tx).numpy()
    return (w @ meth.tx.t().contiguous()).numpy().T  # X as columns, back to one token per row


def nnpress_product(meth: Method, m) -> np.ndarray:
    if meth.x.ndim == 1:
        return m @ meth.x
    return (m @ np.ascontiguousarray(meth.x.T)).T  # the CER/CSER/codebook kernels take X as columns


def level_product(meth: Method, m, activations: str | None = "float32") -> np.ndarray:
    """LevelMatrix (activations given) or LutMatrix (None): X as batch x cols rows."""
    batch = 1 if meth.x.ndim == 1 else meth.x.shape[0]
    if not hasattr(meth, "y"):
        meth.y = np.empty((batch, m.rows), np.float32)
    if activations is None:
        m.matmul(meth.x.reshape(batch, -1), out=meth.y)
    else:
        m.matmul(meth.x.reshape(batch, -1), out=meth.y, activations=activations)
    return meth.y.reshape(-1) if meth.x.ndim == 1 else meth.y


def build_methods(
    bases: list, rows: int, cols: int, values: int, stack_bytes: int, min_layers: int, only, batch: int = 1
) -> dict:
    """Each method's stack: copies (own memory each) of the converted distinct bases, cycled."""
    methods = {}

    def stack(name, convert, copy, nbytes, product):
        if only and name not in only:
            return
        conv = [convert(w, lv) for w, lv in bases]
        b = nbytes(conv[0])
        n = max(min_layers, -(-stack_bytes // b))
        n = -(-n // len(conv)) * len(conv)  # whole cycles: every base equally often
        layers = conv + [copy(conv[i % len(conv)]) for i in range(len(conv), n)]
        methods[name] = Method(name, layers, b, product, cols, batch)

    def csr(w, lv):
        c = torch.from_numpy(w).to_sparse_csr()
        return torch.sparse_csr_tensor(
            c.crow_indices().to(torch.int32), c.col_indices().to(torch.int32), c.values(), size=c.shape
        )

    def csr_copy(m):
        return torch.sparse_csr_tensor(
            m.crow_indices().clone(), m.col_indices().clone(), m.values().clone(), size=m.shape
        )

    def csr_bytes(m):
        return m.values().nbytes + m.col_indices().nbytes + m.crow_indices().nbytes

    def rowgroup_copy(m):
        if m.format == "cser":
            return nnpress.CSERMatrix.from_arrays(m.shape, m.values, m.col, m.group_ptr, m.row_ptr, m.group_value)
        return nnpress.CERMatrix.from_arrays(m.shape, m.values, m.col, m.group_ptr, m.row_ptr)

    stack(
        "torch dense",
        lambda w, lv: torch.from_numpy(w.copy()),
        lambda t: t.clone(),
        lambda t: t.numel() * 4,
        torch_dense_product,
    )
    stack("torch CSR i32", csr, csr_copy, csr_bytes, torch_csr_product)
    stack(
        "nnpress cser",
        lambda w, lv: nnpress.CSERMatrix.from_levels(lv, STEP),
        rowgroup_copy,
        lambda m: m.nbytes + m.plan_nbytes,
        nnpress_product,
    )
    stack(
        "nnpress cer",
        lambda w, lv: nnpress.CERMatrix.from_levels(lv, STEP),
        rowgroup_copy,
        lambda m: m.nbytes + m.plan_nbytes,
        nnpress_product,
    )
    if values <= 16:
        stack(
            "nnpress codebook",
            lambda w, lv: nnpress.CodebookMatrix.from_levels(lv, STEP),
            lambda m: nnpress.CodebookMatrix.from_arrays(m.shape, m.values, m.packed.copy()),
            lambda m: m.nbytes,
            nnpress_product,
        )
    if hasattr(_core, "LevelMatrix"):
        scale = np.full(rows, STEP, np.float32)
        stack(
            "nnpress LevelMatrix",
            lambda w, lv: (_core.LevelMatrix.from_levels(lv, scale), lv),
            lambda p: (_core.LevelMatrix.from_levels(p[1], scale), p[1]),
            lambda p: int(p[0].nbytes),
            lambda meth, p: level_product(meth, p[0]),
        )
        src = methods.get("nnpress LevelMatrix")
        if src is not None:  # the same stack with int16 activations (levels.h: kInt16)
            methods["nnpress LevelMatrix int16"] = Method(
                "nnpress LevelMatrix int16",
                src.layers,
                src.layer_bytes,
                lambda meth, p: level_product(meth, p[0], "int16"),
                cols,
                batch,
            )
    if hasattr(_core, "LutMatrix") and values <= 16:
        scale = np.full(rows, STEP, np.float32)
        stack(
            "nnpress LutMatrix",
            lambda w, lv: (_core.LutMatrix.from_levels(lv, scale), lv),
            lambda p: (_core.LutMatrix.from_levels(p[1], scale), p[1]),
            lambda p: int(p[0].nbytes),
            lambda meth, p: level_product(meth, p[0], None),
        )
    return methods


def add_isa_variants(methods: dict, isas: list) -> None:
    """CSER / CER with a forced ISA, over the same stacks (e.g. the kernel the automatic choice ran before)."""
    for isa in isas:
        for name in ("nnpress cser", "nnpress cer"):
            if name in methods:
                src = methods[name]
                methods[f"{name} isa={isa}"] = Method(
                    f"{name} isa={isa}",
                    src.layers,
                    src.layer_bytes,
                    lambda meth, m, isa=isa: m.matmul(meth.x, isa=isa),
                    src.x.shape[-1],
                )


def reference(bases: list, n_layers: int, x0: np.ndarray) -> np.ndarray:
    """The chain of n_layers (bases cycled) in float64 from the float32 weights (x0: a vector or tokens x cols)."""
    x = np.atleast_2d(x0).astype(np.float64)
    c = math.sqrt(x.shape[-1])
    w64 = [w.astype(np.float64) for w, _ in bases]
    for k in range(n_layers):
        y = x @ w64[k % len(w64)].T
        x = y * (c / np.sqrt(np.einsum("ij,ij->i", y, y)))[:, None]
    return x.reshape(x0.shape)


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
CLOCK = {"now": time.thread_time}  # --clock


def timed_rounds(methods: dict, x0: np.ndarray, rounds: int, rng) -> dict:
    samples = {k: [] for k in methods}
    keys = list(methods)
    for k in keys:  # warm-up pass: code, allocator
        methods[k].forward(x0)
    now = CLOCK["now"]
    for _ in range(rounds):
        for i in rng.permutation(len(keys)):
            m = methods[keys[i]]
            t = now()
            m.forward(x0)
            samples[m.name].append(1e6 * (now() - t) / len(m.layers))
    return samples


def renorm_cost(cols: int, reps: int = 2000, batch: int = 1) -> float:
    y = np.random.default_rng(1).standard_normal(cols if batch == 1 else (batch, cols)).astype(np.float32)
    x = np.empty_like(y)
    best = 1e9
    now = CLOCK["now"]
    for _ in range(5):
        t = now()
        for _ in range(reps):
            renorm(y, x, 1.0)
        best = min(best, (now() - t) / reps)
    return 1e6 * best


def sweep(methods: dict, x0: np.ndarray, stack_bytes: int, rng, rounds: int) -> dict:
    """Per-layer µs (min over rounds) over the first layers of each stack (at least one layer), for stack
    sizes from 1 MiB (cache-resident for sparse layers) doubling up to stack_bytes."""
    sizes = [1 << s for s in range(20, 64) if (1 << s) < stack_bytes] + [stack_bytes]
    out = {}
    for mb in sizes:
        row = {}
        for _ in range(rounds):
            for i in rng.permutation(len(methods)):
                m = list(methods.values())[i]
                n = max(1, min(len(m.layers), mb // m.layer_bytes))
                reps = max(1, len(m.layers) // n)  # about as many products as the whole stack
                t = CLOCK["now"]()
                for _ in range(reps):
                    m.forward(x0, n)
                us = 1e6 * (CLOCK["now"]() - t) / (n * reps)
                row[m.name] = min(row.get(m.name, 1e18), us)
        out[mb] = row
    return out


def run_density(args, density: float, rng) -> dict:
    rows = cols = args.size
    bases = [make_matrix(rng, rows, cols, args.values, density) for _ in range(args.distinct)]
    stack_bytes = int(args.stack_mb * 2**20)
    t0 = time.perf_counter()
    methods = build_methods(bases, rows, cols, args.values, stack_bytes, args.min_layers, args.methods, args.batch)
    add_isa_variants(methods, args.also_isa)
    build_s = time.perf_counter() - t0
    x0 = np.random.default_rng(7).standard_normal(cols if args.batch == 1 else (args.batch, cols)).astype(np.float32)
    x0 *= (np.float32(math.sqrt(cols)) / np.linalg.norm(x0, axis=-1, keepdims=True)).astype(np.float32)
    res = {"density": density, "build_s": round(build_s, 1), "methods": {}}
    if args.sweep:
        res["sweep"] = {str(k): v for k, v in sweep(methods, x0, stack_bytes, rng, max(2, args.rounds // 2)).items()}
    samples = timed_rounds(methods, x0, args.rounds, rng)
    times = {k: (min(v), float(np.median(v))) for k, v in samples.items()}
    refs = {}
    for name, m in methods.items():
        n = len(m.layers)
        if n not in refs:
            refs[n] = reference(bases, n, x0)
        ref = refs[n]
        y = m.forward(x0).astype(np.float64)
        err = float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))
        res["methods"][name] = {
            "layers": n,
            "layer_bytes": int(m.layer_bytes),
            "stack_mb": round(n * m.layer_bytes / 2**20, 1),
            "min_us": round(times[name][0], 1),
            "median_us": round(times[name][1], 1),
            "round_us": [round(v, 1) for v in samples[name]],
            "max_rel_err": err,
        }
    for name, r in res["methods"].items():
        for peer in ("torch dense", "torch CSR i32"):
            if peer in times:
                r["x_" + peer] = round(times[peer][0] / times[name][0], 2)
                r["x_" + peer + " median"] = round(times[peer][1] / times[name][1], 2)
                # Both ran in every round, in an order shuffled per round: the ratio within each round sees
                # the same load on both sides; its median over the rounds.
                ratios = [p / q for p, q in zip(samples[peer], samples[name])]
                r["x_" + peer + " rounds"] = [round(v, 2) for v in ratios]
                r["x_" + peer + " round median"] = round(float(np.median(ratios)), 2)
    del methods, bases
    return res


def markdown(results: list, meta: dict) -> str:
    lines = [
        f"commit {meta['commit']}, {meta['size']}x{meta['size']}, batch {meta['batch']}, {meta['values']} values, "
        "stack >= "
        f"{meta['stack_mb']} MB per method (LLC reported: {meta['llc_mb']} MB), {meta['rounds']} rounds, "
        f"{meta['clock']} time, "
        f"load {meta['load_start']} -> {meta['load_end']}; renorm {meta['renorm_us']:.1f} µs per layer inside "
        "every time",
        "",
        "| density | method | layers | MB/layer | min µs/layer | median µs/layer | ×torch dense | ×torch CSR i32 "
        "| (medians) | max rel err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, m in r["methods"].items():
            lines.append(
                f"| {r['density']} | {name} | {m['layers']} | {m['layer_bytes'] / 2**20:.2f} | {m['min_us']:.0f} | "
                f"{m['median_us']:.0f} | {m.get('x_torch dense', '')} | {m.get('x_torch CSR i32', '')} | "
                f"{m.get('x_torch dense median', '')} / {m.get('x_torch CSR i32 median', '')} | "
                f"{m['max_rel_err']:.1e} |"
            )
    peer = "torch CSR i32"
    if any(peer in r["methods"] and len(r["methods"]) > 1 for r in results):
        lines += [
            "",
            f"Per round: ×{peer} within the round (its time / the method's, both in the same round), and the median "
            "of these ratios",
            "",
            "| density | method | per-round ×" + peer + " | median |",
            "|---|---|---|---|",
        ]
        for r in results:
            for name, m in r["methods"].items():
                if name != peer and "x_" + peer + " rounds" in m:
                    per = ", ".join(f"{v:.2f}" for v in m["x_" + peer + " rounds"])
                    lines.append(f"| {r['density']} | {name} | {per} | {m['x_' + peer + ' round median']:.2f} |")
    for r in results:
        if "sweep" in r:
            names = list(r["methods"])
            lines += [
                "",
                f"Sweep, density {r['density']}: min µs/layer by stack size (MB of each method's weights; at least one "
                "layer, so a dense layer's 64 MB below that)",
                "",
            ]
            lines.append("| stack MB | " + " | ".join(names) + " |")
            lines.append("|---" * (len(names) + 1) + "|")
            for mb, row in r["sweep"].items():
                lines.append(f"| {int(mb) / 2**20:.0f} | " + " | ".join(f"{row[n]:.0f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--values", type=int, default=16)
    ap.add_argument("--densities", default="1,0.25,0.1,0.01")
    llc = llc_bytes()
    ap.add_argument(
        "--stack-mb", type=float, default=max(256.0, 3 * llc / 2**20), help="weights per method (default 3x LLC)"
    )
    ap.add_argument("--min-layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1, help="tokens per product (1: matrix-vector)")
    ap.add_argument("--distinct", type=int, default=4, help="independently drawn matrices per density")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--methods", default="", help="comma-separated subset of the method names")
    ap.add_argument(
        "--also-isa", default="", help="comma-separated ISAs: also CSER and CER with that ISA forced (same stacks)"
    )
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: the thread's CPU time (time.thread_time: a shared machine's other jobs do not count), wall",
    )
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args()
    args.methods = [s.strip() for s in args.methods.split(",") if s.strip()]
    args.also_isa = [s.strip() for s in args.also_isa.split(",") if s.strip()]
    torch.set_num_threads(1)
    CLOCK["now"] = CLOCKS[args.clock]
    rng = np.random.default_rng(0)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        commit = "?"
    meta = {
        "commit": commit,
        "size": args.size,
        "batch": args.batch,
        "values": args.values,
        "stack_mb": round(args.stack_mb),
        "llc_mb": round(llc / 2**20),
        "rounds": args.rounds,
        "clock": args.clock,
        "load_start": os.getloadavg()[0],
        "renorm_us": renorm_cost(args.size, batch=args.batch),
        "isas": nnpress.sparse.available_isas(),
    }
    print(f"# {meta}", flush=True)
    results = []
    for d in (float(s) for s in args.densities.split(",")):
        r = run_density(args, d, rng)
        results.append(r)
        print(json.dumps(r), flush=True)
    meta["load_end"] = os.getloadavg()[0]
    md = markdown(results, meta)
    print(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    if args.md:
        with open(args.md, "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
